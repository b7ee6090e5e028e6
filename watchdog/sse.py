"""Splits a `text/event-stream` body into the ``data`` of its events, straight from the bytes.

It gives the same ``data`` strings as httpx-sse (its line splitting on CR, LF and CRLF, comments,
fields, multi-line data joined with LF, events left unfinished at the end dropped, UTF-8 decoded
with replacement), but works on whole network reads: the usual event, one ``data:`` line, costs
one split and one decode. An event larger than ``max_event_bytes`` is skipped and counted, without
being buffered, the way h11 caps an incomplete event.
"""

from __future__ import annotations


class SSESplitter:
    """Feed it the bytes of the stream as they come; it returns the data of each finished event."""

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self.max_event_bytes = max_event_bytes
        self.oversized = 0  # events skipped because they were larger than max_event_bytes
        self._buffer = b""
        self._skipping = False  # the next finished block is the tail of an oversized event

    def feed(self, chunk: bytes) -> list[str]:
        """The data of the events that ``chunk`` finishes, in order (empty data is left out)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = _normalise(buffer)
        limit = self.max_event_bytes
        end = buffer.rfind(b"\n\n")
        rest = buffer[end + 2 :] if end >= 0 else buffer
        skipping = self._skipping
        out: list[str] = []
        if end >= 0:
            # Finished events never end inside a character: decode them all at once.
            blocks = buffer[:end].decode("utf-8", "replace").split("\n\n")
            check = limit is not None and end > limit
            for block in blocks:
                if skipping:
                    skipping = False  # the end of an oversized event
                elif check and _too_big(block, limit):
                    self.oversized += 1
                elif block.startswith("data: ") and "\n" not in block:
                    if len(block) > 6:
                        out.append(block[6:])
                else:
                    _parse_block(block, out)
        if limit is not None and len(rest) > limit:
            if not skipping:
                self.oversized += 1
            skipping = True
            rest = rest[-1:]  # enough to see the blank line that ends it
        self._skipping = skipping
        self._buffer = rest
        return out

    def close(self) -> list[str]:
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


def _too_big(block: str, limit: int | None) -> bool:
    """More than ``limit`` bytes in UTF-8 (a character takes at most 4)."""
    return limit is not None and len(block) * 4 > limit and len(block.encode()) > limit


def _parse_block(block: str, out: list[str]) -> None:
    """The general case: several lines, other fields, comments, blank lines from extra newlines."""
    data: list[str] = []
    for line in block.split("\n"):
        if not line:
            _dispatch(data, out)
            continue
        if line.startswith(":"):
            continue  # a comment
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    _dispatch(data, out)


def _dispatch(data: list[str], out: list[str]) -> None:
    if data:
        joined = "\n".join(data)
        if joined:
            out.append(joined)
        data.clear()
