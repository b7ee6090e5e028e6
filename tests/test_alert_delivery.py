"""Issue 9, alerts not lost quietly: retries over minutes, named causes, a flush on shutdown."""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any

import anyio
import httpx
import pytest
import trustme
from anyio.abc import ByteStream
from structlog.testing import capture_logs

from tests.conftest import wait_for
from tests.hostile import Request, head, hostile_server
from tests.test_daemon import SSE, daemon_for, frames, hold_open, sample
from watchdog.core.settings import Timeouts
from watchdog.io.backoff import Backoff
from watchdog.io.outbox import Letter, Outbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """Monotonic time that moves only when the outbox sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def deliver_one(handler: Any, *, clock: Clock, **outbox: Any) -> tuple[list[str], list[Any]]:
    results: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        box = Outbox(
            "webhook",
            "http://hook.test/x",
            client,
            count=results.append,
            sleep=clock.sleep,
            clock=clock,
            backoff=Backoff(base=1.0, cap=60.0, random=lambda: 1.0),
            **outbox,
        )
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(box.run)
                box.put(Letter(body={"status": "firing"}, what="t"))
                await wait_for(lambda: box.in_flight == 0, "the letter settled")
                tg.cancel_scope.cancel()
    return results, logs


async def test_a_receiver_down_for_minutes_still_gets_the_alert() -> None:
    """A receiver that fails for about three minutes (8 attempts, backoff capped at 60 s) then
    recovers gets the alert; the old outbox gave up after 5 attempts in about 4 s."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503 if calls <= 8 else 204)

    clock = Clock()
    results, _ = await deliver_one(handler, clock=clock)
    assert results == ["retried"] * 8 + ["delivered"]
    assert 180 < clock.now < 600  # the retries spanned minutes, within the retry window


async def test_a_receiver_down_past_the_window_fails_with_the_cause_named() -> None:
    """Down for longer than retry_for: the letter fails once, logged with the HTTP status."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502)

    clock = Clock()
    results, logs = await deliver_one(handler, clock=clock, retry_for=300.0)
    assert results[-1] == "failed"
    assert set(results[:-1]) == {"retried"}
    failed = next(e for e in logs if e["event"] == "alert.failed")
    assert failed["problem"] == "HTTP 502"
    assert clock.now >= 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def first_problem(url: str, *, verify: ssl.SSLContext | bool = True) -> str:
    results: list[str] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.5), verify=verify) as client:
        box = Outbox("webhook", url, client, count=results.append, retry_for=0.0)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(box.run)
                box.put(Letter(body={}, what="t"))
                await wait_for(lambda: box.in_flight == 0, "the letter settled")
                tg.cancel_scope.cancel()
    problem: str = next(e for e in logs if e["event"] == "alert.failed")["problem"]
    return problem


async def test_failure_causes_are_named_refused_timeout_tls_status() -> None:
    """Connection refused, a receiver that never answers, an untrusted certificate and an HTTP
    status each get their own name in the log (not `ConnectError` for two of them)."""

    async def silent(request: Request, stream: ByteStream) -> None:
        await anyio.sleep_forever()

    async def teapot(request: Request, stream: ByteStream) -> None:
        await stream.send(head(418, {"content-length": "0"}))

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)

    assert await first_problem(f"http://127.0.0.1:{free_port()}/") == "connection refused"
    async with hostile_server(silent) as url:
        assert await first_problem(url) == "timeout waiting for the answer"
    async with hostile_server(teapot, tls=server_tls) as url:
        problem = await first_problem(url)
        assert problem.startswith("TLS verification failed")
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        assert await first_problem(url, verify=trusted) == "HTTP 418"


async def test_sigterm_flushes_queued_alerts_then_counts_what_was_not_delivered() -> None:
    """On stop, a live webhook gets its queued alert within the grace period; a dead one's alert
    is logged and counted as undelivered instead of vanishing."""
    delivered: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "live.test":
            delivered.append(json.loads(request.content))
            return httpx.Response(204)
        if request.url.host == "dead.test":
            raise httpx.ConnectError("[Errno 111] Connection refused")
        hang = [f for f in frames("hang") if b"server.heartbeat" not in f]
        return httpx.Response(200, headers=SSE, content=hold_open(hang))

    daemon = daemon_for(
        handler,
        timeouts=Timeouts(first_response=600, inactivity=600, tool=600),
        webhooks=("http://live.test/hook", "http://dead.test/hook"),
        shutdown_grace=1.0,
    )
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await wait_for(lambda: daemon.watches[0].tracker.pending_count == 1, "the prompt")
            # Hold the deliveries back, as if the daemon were stopped the moment a stall fired.
            daemon.alerting.scope.cancel()
            daemon.watches[0].tracker.set_timeouts(Timeouts(first_response=0.01))
            daemon.timers_poke()
            await wait_for(
                lambda: all(o.in_flight == 1 for o in daemon.alerting.outboxes), "queued alerts"
            )
            tg.cancel_scope.cancel()
    assert [d["status"] for d in delivered] == ["firing"]
    [undelivered] = [e for e in logs if e["event"] == "alert.undelivered"]
    assert undelivered["to"] == "http://dead.test"
    assert undelivered["count"] == 1
    assert undelivered["problem"] == "connection refused"
    flushed = next(e for e in logs if e["event"] == "alerts.flushed")
    assert (flushed["delivered"], flushed["undelivered"]) == (1, 1)
    assert (
        sample(
            daemon, "opencode_watchdog_alert_deliveries_total", sink="webhook", result="undelivered"
        )
        == 1.0
    )
