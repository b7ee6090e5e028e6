"""A misbehaving OpenCode stand-in on a loopback socket: tests script exactly the bytes it sends.

httpx.MockTransport cannot show what real sockets do (a line that never ends, a body of 50 MB,
headers that never come), so the attacks of issue 9 go through this real TCP server.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import ByteStream, Listener, SocketAttribute
from anyio.streams.tls import TLSListener


@dataclass(frozen=True, slots=True)
class Request:
    """The request line of one request (bodies are never needed here)."""

    method: str
    path: str  # without the query string
    target: str


Handler = Callable[[Request, ByteStream], Awaitable[None]]


def head(status: int, headers: dict[str, str] | None = None) -> bytes:
    """A response head; without content-length the body runs until the connection closes."""
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{k}: {v}" for k, v in {"connection": "close", **(headers or {})}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


SSE_HEAD = head(200, {"content-type": "text/event-stream"})
# As `/global/event` sends them: every payload wrapped with its directory.
CONNECTED = b'data: {"directory":"/w","payload":{"type":"server.connected","properties":{}}}\n\n'
HEARTBEAT = b'data: {"directory":"/w","payload":{"type":"server.heartbeat","properties":{}}}\n\n'


async def answer_json(stream: ByteStream, body: bytes, status: int = 200) -> None:
    """A complete JSON answer."""
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    await stream.send(head(status, headers) + body)


async def _read_request(stream: ByteStream) -> Request | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        try:
            buffer += await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
        if len(buffer) > 65536:
            return None
    method, target, _ = buffer.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    return Request(method, target.split("?", 1)[0], target)


@asynccontextmanager
async def hostile_server(
    handler: Handler, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve ``handler`` on 127.0.0.1 (one request per connection), over TLS when given a server
    context; yields the base URL."""

    async def serve_one(stream: ByteStream) -> None:
        async with stream:
            request = await _read_request(stream)
            if request is None:
                return
            try:
                await handler(request, stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError):
                return  # the watchdog hung up, as it should on a hostile stream

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = tcp.extra(SocketAttribute.local_port)
    listener: Listener[ByteStream] = tcp
    if tls is not None:
        # A failed handshake (the client refused our certificate) ends that connection only.
        listener = TLSListener(tcp, tls, standard_compatible=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve_one)
        try:
            yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()
