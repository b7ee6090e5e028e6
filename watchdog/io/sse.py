"""Splits a `text/event-stream` body into the ``data`` of its events, straight from the bytes, bounded.

It gives the same ``data`` strings as httpx-sse (its line splitting on CR, LF and CRLF, comments,
fields, multi-line data joined with LF, events left unfinished at the end dropped, UTF-8 decoded
with replacement), but works on whole network reads: the usual event, one ``data:`` line, costs
one split and one decode. httpx-sse buffers a line until its newline comes, so a server that never
sends one would grow our memory without end; here an event larger than ``max_event_bytes`` is
skipped and reported as ``Oversized``, without being buffered, the way h11 caps an incomplete event.
Memory held is at most the cap plus one network read.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Oversized:
    """An event skipped because it exceeded the cap; ``size`` is the bytes seen when it was."""

    size: int


class SSESplitter:
    """Feed it the bytes of the stream as they come; it returns the data of each finished event."""

    def __init__(
        self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, *, comments: bool = False
    ) -> None:
        self.max_event_bytes = max_event_bytes
        # With ``comments``, a block of comments only (OpenCode 2's `: heartbeat`) gives ``""``:
        # the server is alive, and no event's data is ever empty (empty data is left out).
        self.comments = comments
        self.oversized = 0  # events skipped because they were larger than max_event_bytes
        self._buffer = b""
        self._skipping = False  # the next finished block is the tail of an oversized event
        self._started = False

    @property
    def buffered(self) -> int:
        """Bytes held right now (never much more than the cap)."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[str | Oversized]:
        """What ``chunk`` finishes, in order: event data (empty data is left out) and skips."""
        if not self._started and chunk:
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = _normalise(buffer)
        limit = self.max_event_bytes
        end = buffer.rfind(b"\n\n")
        rest = buffer[end + 2 :] if end >= 0 else buffer
        skipping = self._skipping
        out: list[str | Oversized] = []
        if end >= 0:
            # Finished events never end inside a character: decode them all at once.
            blocks = buffer[:end].decode("utf-8", "replace").split("\n\n")
            check = end > limit
            for block in blocks:
                if skipping:
                    skipping = False  # the end of an oversized event, reported when it began
                elif check and (size := _size_over(block, limit)):
                    self.oversized += 1
                    out.append(Oversized(size))
                elif block.startswith("data: ") and "\n" not in block:
                    if len(block) > 6:
                        out.append(block[6:])
                else:
                    _parse_block(block, out, self.comments)
        # An unfinished event may hold its cap in content plus the line end that will finish it
        # (a newline, and a CR that may be half of a CRLF): anything beyond is over the cap.
        if len(rest) > limit + 2:
            if not skipping:
                self.oversized += 1
                out.append(Oversized(len(rest)))
            skipping = True
            rest = rest[-1:]  # enough to see the blank line that ends it
        self._skipping = skipping
        self._buffer = rest
        return out

    def close(self) -> list[str | Oversized]:
        """At the end of the stream: a final CR still ends a line; an unfinished event is dropped."""
        if self._buffer.endswith(b"\r"):
            return self.feed(b"\n")
        return []


def _normalise(buffer: bytes) -> bytes:
    """CRLF and lone CR become LF; a CR at the very end waits, it may be the first half of CRLF."""
    held = buffer.endswith(b"\r")
    if held:
        buffer = buffer[:-1]
    buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return buffer + b"\r" if held else buffer


def _size_over(block: str, limit: int) -> int:
    """The block's size in UTF-8 when it is more than ``limit`` bytes, else 0 (a character
    takes at most 4 bytes, so short blocks are not encoded to find out)."""
    if len(block) * 4 <= limit:
        return 0
    size = len(block.encode())
    return size if size > limit else 0


def _parse_block(block: str, out: list[str | Oversized], comments: bool = False) -> None:
    """The general case: several lines, other fields, comments, blank lines from extra newlines."""
    data: list[str] = []
    commented = False
    for line in block.split("\n"):
        if not line:
            if data:
                commented = False
            elif commented:
                out.append("")  # a comment-only event: see ``SSESplitter.comments``
                commented = False
            _dispatch(data, out)
            continue
        if line.startswith(":"):
            commented = comments
            continue  # a comment
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if commented and not data:
        out.append("")
    _dispatch(data, out)


def _dispatch(data: list[str], out: list[str | Oversized]) -> None:
    if data:
        joined = "\n".join(data)
        if joined:
            out.append(joined)
        data.clear()
