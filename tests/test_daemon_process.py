"""The daemon as a process under a (simulated) service manager: sd_notify over a real socket."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.e2e.harness import PATIENCE, DaemonProcess, free_port, wait_until
from watchdog.app.config import DEFAULT_SHUTDOWN_GRACE


def test_daemon_speaks_sd_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    """Under systemd the daemon sends READY=1 once serving, WATCHDOG=1 while its loop turns, and
    STOPPING=1 on SIGTERM, exiting 0. The watched server being down does not delay READY."""
    path = tmp_path / "notify.sock"
    received: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.2)

        def drain() -> None:
            try:
                while True:
                    received.extend(sock.recv(4096).decode().splitlines())
            except TimeoutError:
                pass

        daemon = DaemonProcess(
            [
                "--server",
                f"down=http://127.0.0.1:{free_port()}",
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--log-format",
                "json",
            ],
            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"},
        )
        try:
            daemon.wait_listening()

            def pinged() -> bool | None:
                drain()
                return received.count("WATCHDOG=1") >= 2 or None

            wait_until(pinged, PATIENCE, "READY=1 and two pings", 0.05, daemon.output_tail)
            daemon.send_signal(signal.SIGTERM)
            exits = DEFAULT_SHUTDOWN_GRACE + PATIENCE
            wait_until(lambda: daemon.returncode is not None or None, exits, "exit", 0.05)
            drain()
        finally:
            daemon.stop()
    assert received[0] == "READY=1"
    assert received[1] == "STATUS=watching 0/1 servers"
    assert received[-1] == "STOPPING=1"
    assert daemon.returncode == 0
