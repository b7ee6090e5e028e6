"""The byte splitter gives exactly what httpx-sse gives, however the bytes are cut."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import anyio
import httpx
from httpx_sse import aconnect_sse
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.sse import SSESplitter

TEXT = st.characters(exclude_characters="\r\n", exclude_categories=["Cs"])
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


def with_splitter(chunks: list[bytes], max_event_bytes: int | None = None) -> list[str]:
    splitter = SSESplitter(max_event_bytes)
    out = [data for chunk in chunks for data in splitter.feed(chunk)]
    return out + splitter.close()


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
def test_events_over_the_size_cap_are_skipped_and_counted(
    sizes: list[int], limit: int, cuts: list[int]
) -> None:
    """An event larger than max_event_bytes is dropped whole; the ones around it come through."""
    events = [f"data: {i:02}" + "y" * n for i, n in enumerate(sizes)]
    raw = "".join(e + "\n\n" for e in events).encode()
    splitter = SSESplitter(max_event_bytes=limit)
    got = [d for chunk in pieces(raw, sorted(cuts)) for d in splitter.feed(chunk)]
    assert got == [e[6:] for e in events if len(e) <= limit]
    assert splitter.oversized == sum(len(e) > limit for e in events)
