"""The Alertmanager sink against a real Alertmanager on loopback, routed to an in-process webhook."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from watchdog.core.clock import iso
from watchdog.core.transitions import PromptRef, Resolved, Stalled, StallKind
from watchdog.sinks.alertmanager import AlertmanagerSink

pytestmark = pytest.mark.anyio

WAIT = 30.0  # bound on every wait: start-up, and each notification's trip through Alertmanager
BINARIES = ("prometheus-alertmanager", "alertmanager")  # Debian's name, then upstream's


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def alertmanager_binary() -> str:
    """Path of the Alertmanager binary; a missing one fails the test, since it is the point."""
    for name in BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail(
        "Alertmanager is not installed (looked for prometheus-alertmanager and alertmanager): "
        "run scripts/ensure-debian-tools.sh as root, or apt-get install prometheus-alertmanager"
    )


def free_port() -> int:
    """A loopback port free right now (Alertmanager binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Receiver:
    """A webhook receiver: every notification Alertmanager POSTs, with when it arrived."""

    url: str = ""
    notifications: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, status: str) -> tuple[float, dict[str, Any]] | None:
        with self.lock:
            return next((n for n in self.notifications if n[1]["status"] == status), None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    collected = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with collected.lock:
                collected.notifications.append((time.monotonic(), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return  # keeps the test output to the test's own

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collected.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collected
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Alertmanager:
    """A running Alertmanager: its base URL and its log, for failure messages."""

    url: str
    log: Path

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def config_for(webhook_url: str) -> str:
    # One group per prompt and kind, notified one second after its first alert and again one
    # second after any change (the resolution); repeats are pushed out of the test's reach.
    return f"""\
route:
  receiver: watchdog-test
  group_by: [alertname, server, kind, session_id, message_id]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: watchdog-test
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
"""


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    binary = alertmanager_binary()
    config = tmp_path / "alertmanager.yml"
    config.write_text(config_for(receiver.url))
    port = free_port()
    running = Alertmanager(f"http://127.0.0.1:{port}", tmp_path / "alertmanager.log")
    with running.log.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'data'}",
                "--cluster.listen-address=",  # no gossip: no other port, no peers
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(process, running)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_ready(process: subprocess.Popen[bytes], running: Alertmanager) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Alertmanager exited with {process.returncode}:\n{running.log_tail()}")
        try:
            if httpx.get(f"{running.url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"Alertmanager not ready within {WAIT:.0f} s:\n{running.log_tail()}")


async def wait_for(
    find: Callable[[], tuple[float, dict[str, Any]] | None], what: str, am: Alertmanager
) -> tuple[float, dict[str, Any]]:
    with anyio.move_on_after(WAIT):
        while (found := find()) is None:
            await anyio.sleep(0.05)
        return found
    raise AssertionError(f"no {what} notification within {WAIT:.0f} s:\n{am.log_tail()}")


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_stall_and_resolution_reach_a_receiver_through_alertmanager(
    alertmanager: Alertmanager, receiver: Receiver
) -> None:
    """A Stalled is routed by Alertmanager as a firing notification, then its Resolved as resolved."""
    now = time.time()
    ref = PromptRef(
        server="oc",
        session_id="ses_real",
        message_id="msg_real",
        accepted_at=now - 300,
        directory="/work/app",
        provider="anthropic",
        model="claude-sonnet-4",
    )
    labels = {
        "alertname": "OpenCodePromptStalled",
        "server": "oc",
        "kind": "no_response",
        "session_id": "ses_real",
        "message_id": "msg_real",
        "severity": "warning",
        "directory": "/work/app",
    }
    delivered: list[str] = []
    async with httpx.AsyncClient(timeout=10.0) as client:
        sink = AlertmanagerSink(
            [alertmanager.url],
            client,
            count=delivered.append,
            generator_url="http://127.0.0.1:9464/status",
        )
        async with anyio.create_task_group() as tg:
            for outbox in sink.outboxes:
                tg.start_soon(outbox.run)

            sent = time.monotonic()
            sink.emit(Stalled(prompt=ref, kind=StallKind.NO_RESPONSE, at=now, waited=300.0))
            fired_at, firing = await wait_for(
                lambda: receiver.find("firing"), "firing", alertmanager
            )
            firing_delay = fired_at - sent

            sent = time.monotonic()
            sink.emit(Resolved(prompt=ref, kind=StallKind.NO_RESPONSE, at=now + 5, waited=305))
            resolved_at, resolved = await wait_for(
                lambda: receiver.find("resolved"), "resolved", alertmanager
            )
            resolved_delay = resolved_at - sent
            tg.cancel_scope.cancel()

    print(f"\nAlertmanager delays: firing {firing_delay:.2f} s, resolved {resolved_delay:.2f} s")
    assert delivered == ["delivered", "delivered"]
    assert firing["receiver"] == "watchdog-test"
    [alert] = firing["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == labels
    assert alert["annotations"]["summary"] == (
        "A prompt on OpenCode server oc got no response in 300 s."
    )
    assert alert["generatorURL"] == "http://127.0.0.1:9464/status"
    assert instant(alert["startsAt"]) == instant(iso(now) or "")  # the stall time
    [ended] = resolved["alerts"]
    assert ended["status"] == "resolved"
    assert ended["labels"] == labels
    assert ended["fingerprint"] == alert["fingerprint"]
    assert instant(ended["startsAt"]) == instant(alert["startsAt"])
    assert instant(ended["endsAt"]) > instant(alert["startsAt"])
