"""A loopback TCP proxy that can stop forwarding while keeping connections open (a silent stream)."""

from __future__ import annotations

import socket
import threading

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
