"""The event stream read straight from its connection gives exactly what httpx would have given."""

from __future__ import annotations

from typing import Any

import anyio
import h11
import httpx
import pytest
from anyio.abc import ByteStream
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile import Request, hostile_server
from watchdog.io import chunked, source
from watchdog.io.chunked import ChunkedError, Dechunker, body_reader
from watchdog.io.source import EventSource
from watchdog.io.sse import Oversized

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def framed(pieces: list[bytes], extensions: list[bool], trailers: bool) -> bytes:
    """``pieces`` as an HTTP/1.1 chunked body, some chunk-size lines with an extension."""
    out = b""
    for piece, extension in zip(pieces, extensions, strict=False):
        out += b"%x%s\r\n%s\r\n" % (len(piece), b";name=value" if extension else b"", piece)
    return out + b"0\r\n" + (b"Expires: never\r\n" if trailers else b"") + b"\r\n"


def with_h11(body: bytes) -> bytes:
    """What h11 (httpx's parser) makes of the same body."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    out = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            out += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return out
        elif event is h11.NEED_DATA:
            raise AssertionError("h11 wanted more")


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=30),
    extensions=st.lists(st.booleans(), max_size=30),
    trailers=st.booleans(),
    cuts=st.lists(st.integers(0, 12_000), max_size=20),
)
def test_the_dechunker_reads_what_h11_reads(
    pieces: list[bytes], extensions: list[bool], trailers: bool, cuts: list[int]
) -> None:
    """However the body is cut into network reads, the content is h11's, and the end is seen."""
    body = framed(pieces, [*extensions, *[False] * len(pieces)], trailers)
    dechunker = Dechunker()
    got = b""
    at = 0
    for cut in [*sorted({c for c in cuts if c < len(body)}), len(body)]:
        got += dechunker.feed(body[at:cut])
        at = cut
    assert got == with_h11(body) == b"".join(pieces)
    assert dechunker.done


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"zz\r\nab\r\n", "not a hex number"),
        (b"-5\r\nab\r\n", "not a hex number"),
        (b"2\r\nabXX", "does not end with CRLF"),
        (b"1" * 2000, "too long"),
    ],
)
def test_broken_framing_is_an_error_not_a_guess(body: bytes, why: str) -> None:
    with pytest.raises(ChunkedError, match=why):
        Dechunker().feed(body)


EVENTS = [
    b'data: {"directory":"/w","payload":{"type":"server.connected","properties":{}}}\n\n',
    *(
        b'data: {"directory":"/w","payload":{"id":"evt_%d","type":"message.part.delta",'
        b'"properties":{"sessionID":"ses_1","messageID":"msg_1","partID":"prt_1",'
        b'"field":"text","delta":"%d \\u00e9"}}}\n\n' % (i, i)
        for i in range(300)
    ),
]


async def chunked_server(stream: ByteStream, request: Request) -> None:
    """Bun's way: the head and the first events in one write, then every event its own chunk,
    in writes of a few events, then the end of the body."""
    if request.path != "/global/event":
        await stream.send(b"HTTP/1.1 404 X\r\ncontent-length: 0\r\n\r\n")
        return
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    frames = [b"%x\r\n%s\r\n" % (len(e), e) for e in EVENTS]
    await stream.send(head + b"".join(frames[:3]))
    for i in range(3, len(frames), 7):
        await stream.send(b"".join(frames[i : i + 7]))
        await anyio.sleep(0.001)
    await stream.send(b"0\r\n\r\n")


async def read_all(url: str) -> list[str | Oversized]:
    seen: list[str | Oversized] = []
    async with httpx.AsyncClient() as client:
        with pytest.raises(source.ClosedError, match="closed the stream"):
            async with EventSource(client, url).connect() as batches:
                async for batch in batches:
                    seen += batch
    return seen


async def test_straight_from_the_connection_and_through_httpx_the_events_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same chunked stream (its first events sent with the headers), read both ways: the
    same events in the same order, and the direct way was taken."""
    taken: list[bool] = []
    original = chunked.body_reader

    def spy(response: httpx.Response) -> Any:
        reader = original(response)
        taken.append(reader is not None)
        return reader

    async def handler(request: Request, stream: ByteStream) -> None:
        await chunked_server(stream, request)

    async with hostile_server(handler) as url:
        monkeypatch.setattr(source, "body_reader", spy)
        direct = await read_all(url)
        monkeypatch.setattr(source, "body_reader", lambda response: None)
        through_httpx = await read_all(url)
    assert taken == [True]
    expected = [e[6:-2].decode() for e in EVENTS]
    assert direct == through_httpx == expected


async def test_a_body_that_is_not_chunked_is_read_through_httpx() -> None:
    """Close-delimited (a proxy may send it so): no direct reading, the events still come."""
    seen: list[bool] = []

    async def handler(request: Request, stream: ByteStream) -> None:
        await stream.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
            + b"".join(EVENTS[:5])
        )

    async with hostile_server(handler) as url, httpx.AsyncClient() as client:
        async with client.stream("GET", f"{url}/global/event") as response:
            seen.append(body_reader(response) is None)
        assert await read_all(url) == [e[6:-2].decode() for e in EVENTS[:5]]
    assert seen == [True]


async def test_broken_framing_on_the_wire_closes_the_stream_with_a_reason() -> None:
    async def handler(request: Request, stream: ByteStream) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked"
        await stream.send(head + b"\r\n\r\n" + b"%x\r\n%s\r\n" % (len(EVENTS[0]), EVENTS[0]))
        await stream.send(b"zz\r\nnot a chunk\r\n")
        await anyio.sleep(1)

    async with hostile_server(handler) as url, httpx.AsyncClient() as client:
        with pytest.raises(source.ClosedError, match="broken chunked framing"):
            async with EventSource(client, url).connect() as batches:
                async for _ in batches:
                    pass
