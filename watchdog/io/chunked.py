"""Reads an event stream's body straight from its connection, many HTTP chunks per network read.

OpenCode (Bun) sends every event as its own HTTP chunk. Through httpx each chunk climbs five
async generators (h11, httpcore's connection and pool, httpx's transport and response) before
the SSE splitter sees it: that machinery costs more than decoding the event. Once httpx has
sent the request and read the response headers (auth, TLS, proxies, redirects all httpx's), the
body of a chunked stream is read here from the connection's own network stream, up to
``READ_BYTES`` at a time and at most every ``GATHER`` seconds while it is busy, and unframed in
one pass (``Dechunker``); the splitter then gets one piece per read.

What this needs of httpx and httpcore is checked, never assumed: the response's
``network_stream`` extension (public) and the h11 connection behind it (private), whose
``trailing_data`` (public h11) holds the body bytes read with the headers. Whenever any of it is
missing or not as expected (another transport, a proxy tunnel, HTTP/2, a body that is not
chunked), ``body_reader`` returns None and the caller reads through httpx as before. The
connection is never handed back: closing the response closes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import h11
import httpcore
import httpx

# About what the kernel holds of a busy stream at a time: a full read means more is waiting.
READ_BYTES = 64 * 1024
GATHER = 0.01  # seconds between reads of a busy stream: at most 100 reads a second
MAX_CHUNK_LINE = 1024  # a chunk-size line is a few hex digits and maybe an extension


class ChunkedError(Exception):
    """The chunked framing is broken; ``str()`` says how (no body content)."""


class Dechunker:
    """Turns the bytes of a chunked HTTP/1.1 body into its content; feed it as they come.

    ``done`` is set once the last (empty) chunk and its trailers have been read.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0  # content bytes still to come in the current chunk
        self._crlf = False  # the CRLF that ends a chunk's content is still to come
        self._trailers = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The content ``data`` completes, in order; raises ``ChunkedError`` on broken framing."""
        buffer = self._buffer + data if self._buffer else data
        pieces: list[bytes] = []
        at, end = 0, len(buffer)
        while at < end and not self.done:
            if self._left:
                take = min(self._left, end - at)
                pieces.append(buffer[at : at + take])
                at += take
                self._left -= take
                continue
            if self._crlf:
                if end - at < 2:
                    break
                if buffer[at : at + 2] != b"\r\n":
                    raise ChunkedError("a chunk does not end with CRLF")
                at += 2
                self._crlf = False
                continue
            line_end = buffer.find(b"\r\n", at, at + MAX_CHUNK_LINE)
            if line_end < 0:
                if end - at >= MAX_CHUNK_LINE:
                    raise ChunkedError("a chunk-size line is too long")
                break
            line = buffer[at:line_end]
            at = line_end + 2
            if self._trailers:
                if not line:
                    self.done = True  # the blank line after the trailers ends the body
                continue
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ChunkedError("a chunk size is not a hex number") from None
            if size < 0 or not size_text.isalnum():
                raise ChunkedError("a chunk size is not a hex number")
            if size == 0:
                self._trailers = True
                continue
            self._left, self._crlf = size, True
        self._buffer = buffer[at:] if at < end else b""
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)


def body_reader(response: httpx.Response) -> AsyncIterator[bytes] | None:
    """The body of a chunked event-stream response, read straight from its connection; None
    when that is not possible here (the caller then reads through httpx)."""
    if response.headers.get("transfer-encoding", "").strip().lower() != "chunked":
        return None
    network = response.extensions.get("network_stream")
    state = _h11_state(response)
    if network is None or state is None or not hasattr(network, "read"):
        return None
    if state.their_state is not h11.SEND_BODY:
        return None
    pending, closed = state.trailing_data
    return _read(network, bytes(pending), closed)


async def _read(network: Any, pending: bytes, closed: bool) -> AsyncIterator[bytes]:
    """Raises ``ChunkedError`` for broken framing, and httpx's own errors for the network's (so
    that the caller translates them as it does httpx's)."""
    dechunker = Dechunker()
    data = pending
    read_at = anyio.current_time()
    busy = False
    while True:
        if data:
            content = dechunker.feed(data)
            if content:
                yield content
        if dechunker.done or closed:
            return
        # A busy stream (the last read found data waiting) is read at most every GATHER seconds,
        # so that each read takes in many events: the wait is less than a blink, and the cost of
        # a read is paid once for them all. A stream whose reads wait for data is read at once (a
        # wait would only add a timer), and so is a backlog (the last read came back full).
        before = anyio.current_time()
        wait = read_at + GATHER - before
        if busy and wait > 0 and len(data) < READ_BYTES:
            await anyio.sleep(wait)
            before = anyio.current_time()
        try:
            data = await network.read(READ_BYTES)
        except httpcore.TimeoutException as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except httpcore.NetworkError as exc:
            raise httpx.ReadError(str(exc)) from exc
        read_at = anyio.current_time()
        busy = read_at - before < GATHER / 10  # it did not have to wait for the data
        if not data:
            return  # the server closed the connection


def _h11_state(response: httpx.Response) -> h11.Connection | None:
    """The h11 connection httpcore read this response with, if it is one we know."""
    stream: Any = response.stream
    # httpx's client binding, its transport's stream, httpcore's pool and connection streams.
    for name in ("_stream", "_httpcore_stream", "_stream", "_connection", "_h11_state"):
        stream = getattr(stream, name, None)
        if stream is None:
            return None
    return stream if isinstance(stream, h11.Connection) else None
