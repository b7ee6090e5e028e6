"""The bounded SSE splitter: the event-stream rules on any chunking, and a hard memory cap."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse._decoders import SSEDecoder  # the reference we replaced; private but stable
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.sse import Oversized, SSEEvent, SSESplitter

# Field values: no CR or LF (they end a line); anything else, non-ASCII included.
_value = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=30
)
_line_end = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A random event stream and the data of the events it carries, in order."""
    out: list[str] = []
    expected: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        data_lines: list[str] = []
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["data", "data", "comment", "event", "id", "other"]))
            value = draw(_value)
            space = draw(st.sampled_from(["", " "]))
            if kind == "data":
                data_lines.append(value)
                out.append(f"data:{space}{value}")
            elif kind == "comment":
                out.append(f":{value}")
            elif kind == "event":
                out.append(f"event:{space}{value}")
            elif kind == "id":
                out.append(f"id:{space}{value}")
            else:
                out.append(f"retry: {value}")
        out.append("")  # the blank line that dispatches
        if data_lines:
            expected.append("\n".join(data_lines))
    text = ""
    for line in out:
        end = draw(_line_end)
        if text.endswith("\r") and not line and end.startswith("\n"):
            end = "\r"  # CR then LF would read as one CRLF: the blank line would vanish
        text += line + end
    return text.encode(), expected


def split_anywhere(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(blob) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(blob)]:
        pieces.append(blob[start:point])
        start = point
    return pieces


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(0, 10_000), max_size=12))
def test_events_survive_any_chunking_and_line_ending(
    stream: tuple[bytes, list[str]], cuts: list[int]
) -> None:
    """CR, LF, CRLF (a CRLF split across two chunks too), multi-line data, comments, other fields:
    the data out is the data in, however the bytes are cut."""
    blob, expected = stream
    splitter = SSESplitter()
    got: list[SSEEvent | Oversized] = []
    for piece in split_anywhere(blob, cuts):
        got.extend(splitter.feed(piece))
    assert [e.data for e in got if isinstance(e, SSEEvent)] == expected
    assert not any(isinstance(e, Oversized) for e in got)


@settings(max_examples=200, deadline=None)
@given(streams())
def test_agrees_with_httpx_sse_on_lf_streams(stream: tuple[bytes, list[str]]) -> None:
    """On LF-only streams, the events (data, type, id) are those httpx-sse's decoder gives."""
    blob = stream[0].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    decoder = SSEDecoder()
    reference = []
    for line in blob.decode().split("\n")[:-1]:
        sse = decoder.decode(line)
        # httpx-sse also dispatches events without any data line; the spec (and we) do not.
        if sse is not None and sse.data:
            reference.append((sse.data, sse.event, sse.id or None))
    ours = [
        (e.data, e.event, e.id or None)
        for e in SSESplitter().feed(blob)
        if isinstance(e, SSEEvent) and e.data
    ]
    assert ours == reference


def test_event_type_and_id_are_kept() -> None:
    """`event:` names the event; `id:` persists to later events, as the spec says."""
    events = SSESplitter().feed(b"event: ping\nid: 7\ndata: a\n\ndata: b\n\n")
    assert events == [SSEEvent("a", "ping", "7"), SSEEvent("b", "message", "7")]


def test_a_leading_byte_order_mark_is_ignored() -> None:
    """A UTF-8 BOM before the first field does not hide it."""
    assert SSESplitter().feed(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent("x")]


def test_a_line_without_newline_never_grows_the_buffer() -> None:
    """100 MB with no line end: the splitter holds at most the cap, then reports one oversized
    event when the line and its event finally end; the next event goes through."""
    splitter = SSESplitter(max_event_bytes=4096)
    chunk = b"x" * 65536
    assert splitter.feed(b"data: ") == []
    for _ in range(1600):
        assert splitter.feed(chunk) == []
        assert splitter.buffered <= 4096
    out = splitter.feed(b"\n\ndata: ok\n\n")
    assert isinstance(out[0], Oversized)
    assert out[0].size > 100_000_000
    assert out[1:] == [SSEEvent("ok")]


def test_many_data_lines_over_the_cap_drop_the_event() -> None:
    """Each line under the cap, but the event's data over it: dropped as a whole, counted once."""
    splitter = SSESplitter(max_event_bytes=1024)
    out = splitter.feed(b"data: " + b"y" * 600 + b"\n" + b"data: " + b"y" * 600 + b"\n\n")
    assert len(out) == 1
    assert isinstance(out[0], Oversized)
    assert splitter.buffered == 0


def test_an_event_at_the_cap_passes() -> None:
    """The cap is inclusive: a data line of exactly the cap is delivered."""
    splitter = SSESplitter(max_event_bytes=1024)
    out = splitter.feed(b"data:" + b"z" * 1019 + b"\n\n")
    assert out == [SSEEvent("z" * 1019)]


def test_an_unfinished_event_at_the_end_is_not_delivered() -> None:
    """Bytes after the last blank line are not an event (the stream closed mid-event)."""
    assert SSESplitter().feed(b"data: complete\n\ndata: cut") == [SSEEvent("complete")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    """Broken UTF-8 becomes U+FFFD; the decoder then calls the event malformed."""
    [event] = SSESplitter().feed(b"data: \xff\xfe\n\n")
    assert isinstance(event, SSEEvent)
    assert "\ufffd" in event.data


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_real_capture_bytes_split_like_httpx_sse(size: int) -> None:
    """A real OpenCode capture cut in pieces of any size gives the events httpx-sse gives."""
    from tests.conftest import FIXTURES  # noqa: PLC0415 - only this test needs the captures

    blob = (FIXTURES / "1.18.33" / "normal.global-event.sse").read_bytes()
    splitter = SSESplitter()
    ours = [
        e.data
        for i in range(0, len(blob), size)
        for e in splitter.feed(blob[i : i + size])
        if isinstance(e, SSEEvent)
    ]
    decoder = SSEDecoder()
    reference = [
        sse.data
        for line in httpx.Response(200, content=blob).text.splitlines()
        if (sse := decoder.decode(line)) is not None
    ]
    assert ours == reference
    assert ours
