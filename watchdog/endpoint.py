"""A tiny HTTP/1.1 server for `/metrics`, `/healthz` and `/status` (GET only, one request per connection).

prometheus_client's own server runs in a thread and knows only `/metrics`; this one lives in the
daemon's task group, so it shares its state without locks and stops with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.stapled import MultiListener
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger("watchdog.endpoint")

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 5.0
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Health:
    """The answer of `/healthz`."""

    ok: bool
    detail: dict[str, Any]


def bound_port(listener: MultiListener[SocketStream]) -> int:
    """The port the listener got (useful with port 0)."""
    port: int = listener.listeners[0].extra(SocketAttribute.local_port)
    return port


class Endpoint:
    """Serves the registry and two JSON views of the daemon's state."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Callable[[], Health],
        status: Callable[[], dict[str, Any]],
        page: Callable[[], bytes] | None = None,
    ) -> None:
        self._registry = registry
        self._health = health
        self._status = status
        self._page = page  # the HTML status page at `/` (watchdog/page.py)

    @staticmethod
    async def bind(host: str, port: int) -> MultiListener[SocketStream]:
        """Open the listening socket (raises OSError when the address is taken or invalid)."""
        return await anyio.create_tcp_listener(local_host=host, local_port=port)

    async def serve(self, listener: MultiListener[SocketStream]) -> None:
        """Answer requests until cancelled."""
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(REQUEST_TIMEOUT):
                    head = await _read_head(stream)
                    status, content_type, body = self._respond(head)
                    await stream.send(
                        _response(status, content_type, body, head_only=_is_head(head))
                    )
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return

    def _respond(self, head: bytes | None) -> tuple[int, str, bytes]:
        if head is None:
            return 400, "text/plain", b"bad request\n"
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target, _ = parts
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            health = self._health()
            return (
                (200 if health.ok else 503),
                "application/json",
                _json({"ok": health.ok, **health.detail}),
            )
        if path == "/status":
            return 200, "application/json", _json(self._status())
        if path == "/" and self._page is not None:
            return 200, "text/html; charset=utf-8", self._page()
        if path == "/":
            return 200, "text/plain", b"opencode-watchdog: /metrics /healthz /status\n"
        return 404, "text/plain", b"not found\n"


async def _read_head(stream: SocketStream) -> bytes | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_REQUEST_HEAD:
            return None
        buffer += await stream.receive(4096)
    return buffer


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode() + b"\n"


def _is_head(head: bytes | None) -> bool:
    return head is not None and head.startswith(b"HEAD ")


def _response(status: int, content_type: str, body: bytes, *, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)
