"""A tiny HTTP/1.1 server for `/metrics`, `/healthz` and `/status` (GET only, one request per connection).

prometheus_client's own server runs in a thread and knows only `/metrics`; this one lives in the
daemon's task group, so it shares its state without locks and stops with it.
"""

from __future__ import annotations

import errno
import json
import resource
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener
from anyio.streams.tls import TLSStream
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from watchdog.io.webconfig import BasicAuth, WebConfig

log = structlog.get_logger("watchdog.endpoint")

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 512
ACCEPT_PAUSE_MIN = 0.05
ACCEPT_PAUSE_MAX = 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
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
        *,
        web: WebConfig | None = None,
        max_connections: int | None = None,
        page: Callable[[], bytes] | None = None,
    ) -> None:
        self._registry = registry
        self._health = health
        self._status = status
        self._tls = web.server_context() if web is not None and web.tls else None
        self._auth = BasicAuth(web.users) if web is not None and web.users else None
        self.connections = Connections(max_connections or default_max_connections())
        self._page = page  # the HTML status page at `/` (watchdog/page.py)

    @staticmethod
    async def bind(host: str, port: int) -> MultiListener[SocketStream]:
        """Open the listening socket (raises OSError when the address is taken or invalid)."""
        return await anyio.create_tcp_listener(local_host=host, local_port=port)

    async def serve(self, listener: MultiListener[SocketStream]) -> None:
        """Answer requests until cancelled; running out of descriptors sheds, never stops."""
        async with listener, anyio.create_task_group() as tg:
            for one in listener.listeners:
                # create_tcp_listener gives socket listeners; accept() is theirs.
                assert isinstance(one, SocketListener)
                tg.start_soon(self._accept_forever, one, tg)

    async def _accept_forever(self, listener: SocketListener, tg: TaskGroup) -> None:
        pause = ACCEPT_PAUSE_MIN
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    log.warning("endpoint.accept_failed", error=exc.strerror or str(exc))
                    continue
                # EMFILE: the connection stays in the kernel's backlog. Free a descriptor by
                # closing the oldest idle connection, and wait a little before trying again.
                shed = self.connections.shed_oldest_idle()
                log.error(
                    "endpoint.out_of_descriptors",
                    error=exc.strerror,
                    open_connections=len(self.connections),
                    shed=shed,
                    retry_in=pause,
                )
                await anyio.sleep(pause)
                pause = min(ACCEPT_PAUSE_MAX, pause * 2)
                continue
            pause = ACCEPT_PAUSE_MIN
            if self.connections.full() and not self.connections.shed_oldest_idle():
                await stream.aclose()  # every connection is busy answering: refuse this one
                self.connections.refused += 1
                continue
            tg.start_soon(self._handle, stream)

    async def _handle(self, raw: SocketStream) -> None:
        with self.connections.track() as connection:
            async with raw:
                try:
                    with anyio.fail_after(REQUEST_TIMEOUT):
                        stream: ByteStream = raw
                        if self._tls is not None:
                            stream = await TLSStream.wrap(
                                raw,
                                server_side=True,
                                ssl_context=self._tls,
                                standard_compatible=False,
                            )
                        head = await _read_head(stream)
                        connection.idle = False
                        if self._auth is not None and not await self._authorized(head):
                            await stream.send(_UNAUTHORIZED)
                            return
                        status, content_type, body = self._respond(head)
                        await stream.send(
                            _response(status, content_type, body, head_only=_is_head(head))
                        )
                except (
                    TimeoutError,
                    anyio.EndOfStream,
                    anyio.BrokenResourceError,
                    OSError,
                    ssl.SSLError,
                ):
                    return
                except Exception:
                    log.exception("endpoint.request_failed")  # our bug: this request only

    async def _authorized(self, head: bytes | None) -> bool:
        """Every path but /healthz needs a user (probes rarely carry credentials)."""
        if head is None or _path(head) == "/healthz":
            return True
        assert self._auth is not None
        return await self._auth.check(_header(head, b"authorization"))

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


class _Connection:
    __slots__ = ("idle", "scope", "started")

    def __init__(self, scope: anyio.CancelScope, started: float) -> None:
        self.scope = scope
        self.started = started
        self.idle = True  # no complete request yet: the kind of connection that is shed


class Connections:
    """The open connections of the endpoint, capped; the oldest idle one is shed first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[int, _Connection] = {}
        self.shed = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._open)

    def full(self) -> bool:
        """At the cap: a new connection must replace an idle one or be refused."""
        return len(self._open) >= self.limit

    @contextmanager
    def track(self) -> Iterator[_Connection]:
        """Register the current task's connection; shedding cancels its scope."""
        with anyio.CancelScope() as scope:
            connection = _Connection(scope, anyio.current_time())
            self._open[id(connection)] = connection
            try:
                yield connection
            finally:
                del self._open[id(connection)]

    def shed_oldest_idle(self) -> bool:
        """Close the idle connection that has waited longest; False when none is idle."""
        idle = [c for c in self._open.values() if c.idle and not c.scope.cancel_called]
        if not idle:
            return False
        min(idle, key=lambda c: c.started).scope.cancel()
        self.shed += 1
        return True


def default_max_connections() -> int:
    """Half the descriptor limit (the streams, sinks and Python need the rest), at most 512."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except OSError:  # a seccomp filter that refuses it: the default cap still holds
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft // 2))


def _path(head: bytes) -> str:
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    return parts[1].split("?", 1)[0] if len(parts) == 3 else ""


def _header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


_UNAUTHORIZED = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b'WWW-Authenticate: Basic realm="opencode-watchdog", charset="UTF-8"\r\n'
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
    b"unauthorized\n"
)


async def _read_head(stream: ByteStream) -> bytes | None:
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
