"""A bounded Server-Sent Events splitter: bytes in, events out, never more than a cap buffered.

httpx-sse buffers a line until its newline comes, so a server that never sends one grows our
memory without end. This splitter follows the WHATWG event-stream rules (CR, LF or CRLF line ends,
split anywhere across chunks; ``data`` lines joined with LF; ``:`` comments; unknown fields
ignored) and drops an event whose line or data exceeds ``max_event_bytes``, reporting it as
``Oversized`` once its end arrives. Memory held is at most the cap plus one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
_CR, _LF = 0x0D, 0x0A
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event; ``data`` is its data lines joined with LF."""

    data: str
    event: str = "message"
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Oversized:
    """An event that was dropped because it exceeded the cap; ``size`` is the bytes seen."""

    size: int


class SSESplitter:
    """Feed it chunks as they arrive; it returns the events they complete."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._line = bytearray()
        self._data = bytearray()
        self._has_data = False
        self._event = ""
        self._last_id: str | None = None
        self._size = 0  # bytes of the current event so far, dropped ones included
        self._too_big = False  # the current event went over the cap: drop it at its end
        self._skipping_line = False  # the current line went over the cap: discard to its end
        self._after_cr = False  # the last chunk ended in CR: a leading LF belongs to it
        self._started = False

    @property
    def buffered(self) -> int:
        """Bytes held right now (for tests: never much more than the cap)."""
        return len(self._line) + len(self._data)

    def feed(self, chunk: bytes) -> list[SSEEvent | Oversized]:
        """Split ``chunk``; returns the events it completes, in order."""
        out: list[SSEEvent | Oversized] = []
        view = chunk
        if not self._started and view:
            self._started = True
            if view.startswith(_BOM):
                view = view[len(_BOM) :]
        pos, end = 0, len(view)
        if self._after_cr and end:
            self._after_cr = False
            if view[0] == _LF:
                pos = 1
        next_cr = view.find(b"\r", pos)
        next_lf = view.find(b"\n", pos)
        while pos < end:
            if 0 <= next_cr < pos:
                next_cr = view.find(b"\r", pos)
            if 0 <= next_lf < pos:
                next_lf = view.find(b"\n", pos)
            ends = [i for i in (next_cr, next_lf) if i >= 0]
            if not ends:
                self._take(view, pos, end)
                break
            stop = min(ends)
            self._take(view, pos, stop)
            if view[stop] == _CR:
                if stop + 1 == end:
                    self._after_cr = True
                    pos = end
                else:
                    pos = stop + 2 if view[stop + 1] == _LF else stop + 1
            else:
                pos = stop + 1
            self._size += 1
            self._end_line(out)
        return out

    def _take(self, view: bytes, start: int, stop: int) -> None:
        """Add ``view[start:stop]`` to the current line, or drop it past the cap."""
        n = stop - start
        self._size += n
        if self._skipping_line or not n:
            return
        if len(self._line) + n > self.max_event_bytes:
            self._skipping_line = True
            self._too_big = True
            self._line.clear()
            self._data.clear()
            return
        self._line += view[start:stop]

    def _end_line(self, out: list[SSEEvent | Oversized]) -> None:
        if self._skipping_line:
            self._skipping_line = False
            return
        line = bytes(self._line)
        self._line.clear()
        if not line:
            self._dispatch(out)
            return
        if line[0] == ord(":"):
            return  # a comment (keep-alives from proxies): not an event, not proof of life
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            if self._too_big:
                return
            if len(self._data) + len(value) + 1 > self.max_event_bytes:
                self._too_big = True
                self._data.clear()
                return
            self._data += value
            self._data.append(_LF)
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._last_id = value.decode("utf-8", "replace")

    def _dispatch(self, out: list[SSEEvent | Oversized]) -> None:
        if self._too_big:
            out.append(Oversized(self._size))
        elif self._has_data:
            data = bytes(self._data[:-1]).decode("utf-8", "replace")
            out.append(SSEEvent(data, self._event or "message", self._last_id))
        self._data.clear()
        self._has_data = False
        self._event = ""
        self._size = 0
        self._too_big = False
