"""The byte splitter gives exactly what httpx-sse gives, however the bytes are cut, and stays bounded."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import anyio
import httpx
from httpx_sse import aconnect_sse
from hypothesis import example, given, settings
from hypothesis import strategies as st

from watchdog.io.sse import DEFAULT_MAX_EVENT_BYTES, Oversized, SSESplitter

# U+FEFF is left out: a leading BOM is skipped, as the WHATWG rules say (tested on its own),
# where httpx-sse keeps it.
TEXT = st.characters(exclude_characters="\r\n\ufeff", exclude_categories=["Cs"])
LINES = st.one_of(
    st.sampled_from(
        [
            "data: x",
            "data:x",
            "data:  two spaces",
            "data",
            "data:",
            "data: ",
            ": a comment",
            ":",
            "event: update",
            "id: 7",
            "retry: 100",
            "retry: soon",
            "unknown: field",
            "",
            '{"directory":"/tmp","payload":{"type":"sync"}}',
            "data: héllo ✓ 🎉",
        ]
    ),
    st.builds(
        lambda v: "data: " + v,
        st.text(alphabet=TEXT),
    ),
    st.text(alphabet=TEXT, max_size=12),
)
ENDINGS = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """SSE text with mixed line endings, plus where it is cut into network reads."""
    parts = draw(st.lists(st.tuples(LINES, ENDINGS), max_size=30))
    text = "".join(line + ending for line, ending in parts)
    raw = text.encode()
    if draw(st.booleans()):  # damaged UTF-8 too
        raw += draw(st.binary(max_size=6)) + b"\n\n"
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=12, unique=True)))
    return raw, cuts


def pieces(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *[c for c in cuts if 0 < c < len(raw)], len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def with_httpx_sse(chunks: list[bytes]) -> list[str]:
    """The data of every event httpx-sse yields (non-empty, as the source keeps them)."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def read() -> list[str]:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=body()
            )

        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
            aconnect_sse(client, "GET", "http://127.0.0.1/e") as source,
        ):
            return [sse.data async for sse in source.aiter_sse() if sse.data]

    return anyio.run(read)


def with_splitter(chunks: list[bytes], max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[str]:
    splitter = SSESplitter(max_event_bytes)
    out = [data for chunk in chunks for data in splitter.feed(chunk)] + splitter.close()
    assert not any(isinstance(d, Oversized) for d in out)
    return [d for d in out if isinstance(d, str)]


@settings(max_examples=400, deadline=None)
@given(streams())
def test_same_events_as_httpx_sse(stream: tuple[bytes, list[int]]) -> None:
    """CR, LF and CRLF, comments, other fields, multi-line data, odd UTF-8 and any chunking."""
    raw, cuts = stream
    chunks = pieces(raw, cuts)
    assert with_splitter(chunks) == with_httpx_sse(chunks)


def test_multi_line_data_and_comments() -> None:
    """Data lines join with LF; comments and other fields say nothing; CR/CRLF end lines too."""
    raw = b": hi\r\nevent: x\r\ndata: a\r\ndata: b\r\rdata: c\n\ndata\n\n"
    assert with_splitter(pieces(raw, [3, 17, 18, 19])) == ["a\nb", "c"]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 60), min_size=1, max_size=20),
    limit=st.integers(8, 40),
    cuts=st.lists(st.integers(1, 2000), max_size=15, unique=True),
)
# Found by this test: an event of exactly the cap, read up to its first newline, is not over it.
@example(sizes=[5], limit=13, cuts=[14])
def test_events_over_the_size_cap_are_skipped_and_counted(
    sizes: list[int], limit: int, cuts: list[int]
) -> None:
    """An event larger than max_event_bytes is dropped whole; the ones around it come through."""
    events = [f"data: {i:02}" + "y" * n for i, n in enumerate(sizes)]
    raw = "".join(e + "\n\n" for e in events).encode()
    splitter = SSESplitter(max_event_bytes=limit)
    got = [d for chunk in pieces(raw, sorted(cuts)) for d in splitter.feed(chunk)]
    assert [d for d in got if isinstance(d, str)] == [e[6:] for e in events if len(e) <= limit]
    skipped = sum(len(e) > limit for e in events)
    assert splitter.oversized == skipped
    assert sum(isinstance(d, Oversized) for d in got) == skipped


def test_a_leading_byte_order_mark_is_ignored() -> None:
    """A UTF-8 BOM before the first field does not hide it."""
    assert SSESplitter().feed(b"\xef\xbb\xbfdata: x\n\n") == ["x"]


def test_a_line_without_newline_never_grows_the_buffer() -> None:
    """100 MB with no line end: the splitter holds at most the cap (and one read), reports one
    oversized event, and the next event goes through."""
    splitter = SSESplitter(max_event_bytes=4096)
    chunk = b"x" * 65536
    assert splitter.feed(b"data: ") == []
    seen: list[str | Oversized] = []
    for _ in range(1600):
        seen += splitter.feed(chunk)
        assert splitter.buffered <= 4096
    assert len(seen) == 1
    assert isinstance(seen[0], Oversized)
    assert seen[0].size > 4096
    assert splitter.feed(b"\n\ndata: ok\n\n") == ["ok"]
    assert splitter.oversized == 1


def test_many_data_lines_over_the_cap_drop_the_event() -> None:
    """Each line under the cap, but the event's data over it: dropped as a whole, counted once."""
    splitter = SSESplitter(max_event_bytes=1024)
    out = splitter.feed(b"data: " + b"y" * 600 + b"\n" + b"data: " + b"y" * 600 + b"\n\n")
    assert len(out) == 1
    assert isinstance(out[0], Oversized)
    assert splitter.buffered == 0


def test_an_event_at_the_cap_passes() -> None:
    """The cap is inclusive: an event of exactly the cap is delivered."""
    splitter = SSESplitter(max_event_bytes=1024)
    assert splitter.feed(b"data:" + b"z" * 1019 + b"\n\n") == ["z" * 1019]


def test_an_unfinished_event_at_the_end_is_not_delivered() -> None:
    """Bytes after the last blank line are not an event (the stream closed mid-event)."""
    splitter = SSESplitter()
    assert splitter.feed(b"data: complete\n\ndata: cut") == ["complete"]
    assert splitter.close() == []


def test_invalid_utf8_is_replaced_not_raised() -> None:
    """Broken UTF-8 becomes U+FFFD; the decoder then calls the event malformed."""
    [data] = SSESplitter().feed(b"data: \xff\xfe\n\n")
    assert isinstance(data, str)
    assert "\ufffd" in data
