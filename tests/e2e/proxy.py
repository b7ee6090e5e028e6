"""Loopback proxies for fault injection: a TCP one that can go silent, an HTTP one that swallows
prompts, and an HTTP one that cuts streams and answers chosen paths with errors."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from .harness import free_port


class FreezingProxy:
    """Forwards 127.0.0.1:<port> to an upstream port; ``freeze()`` silences open connections.

    A frozen connection stays open and reads nothing more from the server side: to the client
    it looks like a server that went quiet without closing, the failure the liveness timeout is
    for. Connections accepted after the freeze forward normally.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._frozen: list[threading.Event] = []
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def freeze(self) -> None:
        """Stop forwarding on every connection open now (without closing them)."""
        with self._lock:
            for flag in self._frozen:
                flag.set()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            frozen = threading.Event()
            with self._lock:
                self.connections += 1
                self._frozen.append(frozen)
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, frozen), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, frozen: threading.Event | None) -> None:
        src.settimeout(0.2)
        while not self._closed.is_set():
            if frozen is not None and frozen.is_set():
                self._closed.wait(0.2)  # hold the connection open, forward nothing
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                dst.close()
                return
            try:
                dst.sendall(data)
            except OSError:
                return


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class PromptSwallowingProxy:
    """A fault-injecting HTTP proxy in front of a real server (127.0.0.1 both sides).

    It forwards every request and streams every answer (event streams included), except that
    while ``swallowing`` is true it answers each ``POST .../prompt_async`` with 204 itself and
    forwards nothing: to a client, a server that accepts prompts and then does nothing at all.
    """

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.swallowing = True
        self.swallowed = 0
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=60.0), trust_env=False)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # bodies end when the connection closes

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                owner._forward(self)

            def do_POST(self) -> None:
                owner._forward(self)

            def do_DELETE(self) -> None:
                owner._forward(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path
        if (
            self.swallowing
            and handler.command == "POST"
            and path.split("?", 1)[0].endswith("/prompt_async")
        ):
            self.swallowed += 1
            handler.send_response(204)
            handler.end_headers()
            return
        headers = {
            k: v
            for k, v in handler.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "accept-encoding"
        }
        try:
            with self._client.stream(
                handler.command, self.upstream_url + path, headers=headers, content=body
            ) as upstream:
                handler.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        handler.send_header(key, value)
                handler.end_headers()
                for chunk in upstream.iter_raw():
                    handler.wfile.write(chunk)
                    handler.wfile.flush()
        except (httpx.HTTPError, OSError):
            return

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()
        self._client.close()


class FaultProxy:
    """A pass-through HTTP proxy in front of a real server, with switches for faults.

    Every request is forwarded and every answer streamed back as it arrives, chunk by chunk and
    flushed (event streams stay live: nothing is buffered). Switches:

    - ``cut_streams()`` closes every event stream open now (the client sees the server hang up);
      later connections are forwarded normally.
    - ``fail(path, status)`` answers every request for ``path`` (the path alone, any query) with
      that status and an OpenCode-shaped error body, until ``heal(path)``.

    ``hits[path]`` counts the requests for each path, failed ones included.
    """

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.hits: dict[str, int] = {}
        self._failing: dict[str, int] = {}
        self._lock = threading.Lock()
        self._streams: list[tuple[BaseHTTPRequestHandler, httpx.Response]] = []
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None), trust_env=False)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # bodies end when the connection closes

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                owner._forward(self)

            def do_POST(self) -> None:
                owner._forward(self)

            def do_DELETE(self) -> None:
                owner._forward(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, path: str, status: int = 503) -> None:
        with self._lock:
            self._failing[path] = status

    def heal(self, *paths: str) -> None:
        """Stop failing ``paths`` (all of them when none is given)."""
        with self._lock:
            for path in paths or list(self._failing):
                self._failing.pop(path, None)

    def cut_streams(self) -> int:
        """Close every event stream open now; returns how many were cut."""
        with self._lock:
            streams, self._streams = self._streams, []
        for handler, upstream in streams:
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            upstream.close()
        return len(streams)

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            status = self._failing.get(path)
        if status is not None:
            error = json.dumps({"name": "UnknownError", "data": {"message": "injected"}})
            payload = error.encode()
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        # The client's own accept-encoding, or identity: httpx would otherwise ask for gzip and
        # the raw bytes passed on would be compressed where the client asked for none.
        headers = {"accept-encoding": "identity"}
        headers.update(
            (k.lower(), v) for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP
        )
        try:
            with self._client.stream(
                handler.command, self.upstream_url + handler.path, headers=headers, content=body
            ) as upstream:
                streaming = upstream.headers.get("content-type", "").startswith("text/event-stream")
                if streaming:
                    with self._lock:
                        self._streams.append((handler, upstream))
                handler.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        handler.send_header(key, value)
                handler.end_headers()
                for chunk in upstream.iter_raw():
                    handler.wfile.write(chunk)
                    handler.wfile.flush()
        except (httpx.HTTPError, OSError, ValueError):
            return  # cut, or the client went away
        finally:
            with self._lock:
                self._streams = [s for s in self._streams if s[0] is not handler]

    def close(self) -> None:
        self.cut_streams()
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()
        self._client.close()
