"""Issue 9, "never crash on input": what a broken or hostile server sends costs at most one event."""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import ByteStream
from structlog.testing import capture_logs

from tests.conftest import wait_for
from tests.hostile import SSE_HEAD, Request, answer_json, head, hostile_server
from tests.test_daemon import FAST, SSE, daemon_for, frames, hold_open, sample
from watchdog.app.config import Config
from watchdog.app.daemon import Daemon
from watchdog.core.settings import ServerConfig
from watchdog.core.transitions import PromptRef, Retry, Stalled, StallKind
from watchdog.io.source import ProtocolError, ServerApi
from watchdog.sinks.alert import document
from watchdog.sinks.alertmanager import AlertmanagerSink
from watchdog.sinks.log import LogSink

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_both_stream_paths_404_mark_the_stream_down_and_retry() -> None:
    """`/global/event` and `/event` both 404 (a wrong base URL): logged, stream down with the
    reason, retried; the daemon keeps running."""
    paths: list[str] = []

    async def handler(request: Request, stream: ByteStream) -> None:
        if request.path != "/api/info":  # api = "auto" asks it first: 404, so 1.x
            paths.append(request.path)
        await stream.send(head(404, {"content-length": "0"}))

    async with hostile_server(handler) as url:
        daemon = Daemon(Config(servers=(ServerConfig("oc", url),), listen_port=0, timeouts=FAST))
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                await wait_for(lambda: paths.count("/event") >= 2, "a retry after both 404s")
                # The health check alternates between "down: <reason>" (backing off) and
                # "connecting" with the reason kept as previous_error (retrying); either names
                # the 404, and neither is a passing moment, so read it whichever it is.
                health = daemon.health()
                tg.cancel_scope.cancel()
    assert paths[:3] == ["/global/event", "/event", "/global/event"]
    down = [e for e in logs if e["event"] == "stream.down"]
    assert "both /global/event and /event answered 404" in down[0]["error"]
    assert not health.ok
    oc = health.detail["servers"]["oc"]
    shown = oc["previous_error"] if oc["reason"] == "connecting" else oc["reason"]
    assert "404" in shown, oc
    assert sample(daemon, "opencode_watchdog_stream_reconnects_total", server="oc") >= 1.0  # type: ignore[operator]


async def test_one_server_task_crashing_is_logged_counted_restarted_and_stays_its_own() -> None:
    """A task that dies unexpectedly (here the transport itself raises a non-HTTP error) is logged
    with its traceback, counted, restarted with backoff; the other server keeps being watched."""
    bad_calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal bad_calls
        if request.url.host == "bad.test":
            bad_calls += 1
            if bad_calls == 1:
                raise RuntimeError("a bug below the stream")
            return httpx.Response(200, headers=SSE, content=hold_open(frames("normal")[:1]))
        if request.url.path != "/global/event":
            return httpx.Response(404)
        hang = [f for f in frames("hang") if b"server.heartbeat" not in f]
        return httpx.Response(200, headers=SSE, content=hold_open(hang))

    daemon = daemon_for(
        handler,
        servers=(ServerConfig("good", "http://good.test"), ServerConfig("bad", "http://bad.test")),
    )
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await wait_for(lambda: any(e["event"] == "prompt.stalled" for e in logs), "a stall")
            await wait_for(
                lambda: sample(daemon, "opencode_watchdog_stream_up", server="bad") == 1.0,
                "the restarted stream up",
            )
            tg.cancel_scope.cancel()
    crash = next(e for e in logs if e["event"] == "task.crashed")
    assert crash["task"] == "stream"
    assert crash["server"] == "bad"
    assert crash["exc_info"] is True
    restarts = sample(daemon, "opencode_watchdog_task_restarts_total", task="stream", server="bad")
    assert restarts == 1.0
    stall = next(e for e in logs if e["event"] == "prompt.stalled")
    assert stall["server"] == "good"


BAD_TIMES = [math.nan, math.inf, -math.inf, 1e300, -1e300]


def _stall(bad: float) -> Stalled:
    ref = PromptRef("oc", "ses_1", "msg_1", accepted_at=bad)
    return Stalled(
        ref, StallKind.NO_RESPONSE, at=1764067783.0, waited=bad, retry=Retry(1, "m", next_at=bad)
    )


@pytest.mark.parametrize("bad", BAD_TIMES, ids=str)
def test_alert_document_with_unusable_times_uses_null(bad: float) -> None:
    """NaN, ±Infinity and 1e300 times format as null; the document is strict JSON."""
    body = document(_stall(bad))
    json.dumps(body, allow_nan=False)
    assert body["accepted_at"] is None
    assert body["retry"]["next_at"] is None
    assert body["at"] == "2025-11-25T10:49:43.000Z"


@pytest.mark.parametrize("bad", BAD_TIMES, ids=str)
def test_log_sink_logs_a_stall_with_unusable_times(bad: float) -> None:
    """The stall is still logged, with null for the time it cannot show."""
    with capture_logs() as logs:
        LogSink().emit(_stall(bad))
    [entry] = logs
    assert entry["event"] == "prompt.stalled"
    assert entry["accepted_at"] is None


@pytest.mark.parametrize("bad", BAD_TIMES, ids=str)
async def test_alertmanager_alert_with_unusable_times_uses_the_time_of_sending(bad: float) -> None:
    """Alertmanager needs startsAt: an unusable one becomes the receive time, and it is sent."""
    sent: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sink = AlertmanagerSink(
            ["http://am.test"], client, count=lambda _: None, clock=lambda: 1764067783.0
        )
        stall = _stall(bad)
        sink.emit(Stalled(stall.prompt, stall.kind, at=bad, waited=stall.waited, retry=stall.retry))
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.outboxes[0].run)
            await sink.outboxes[0].drain(5.0)
            tg.cancel_scope.cancel()
    [[alert]] = sent
    # The time of sending, or endsAt when the unusable start sorts after it (+inf): never later.
    assert alert["startsAt"] in ("2025-11-25T10:49:43.000Z", alert["endsAt"])
    assert alert["endsAt"] == "2025-11-25T10:53:43.000Z"


async def test_hostile_events_on_a_real_socket_are_counted_and_the_stream_survives() -> None:
    """Deep nesting and NaN (not JSON) on the wire are counted malformed; a user message whose
    time is a valid number but no usable time (400 digits, -1e300) is still a prompt, timed from
    its arrival and counted (once: both lines carry the same message). The heartbeat after them
    gets through and the stream stays up."""
    admission = (
        '{"type":"message.updated","properties":{"info":{"role":"user","sessionID":"s",'
        '"id":"m","time":{"created":%s}}}}'
    )
    lines = [
        "[" * 100_000 + "]" * 100_000,
        admission % ("9" * 400),
        admission % "NaN",
        admission % "-1e300",
    ]

    async def handler(request: Request, stream: ByteStream) -> None:
        if request.path != "/event":
            await stream.send(head(404, {"content-length": "0"}))
            return
        await stream.send(SSE_HEAD + b'data: {"type":"server.connected","properties":{}}\n\n')
        for line in lines:
            await stream.send(f"data: {line}\n\n".encode())
        await stream.send(b'data: {"type":"server.heartbeat","properties":{}}\n\n')
        await anyio.sleep_forever()

    async with hostile_server(handler) as url:
        daemon = Daemon(Config(servers=(ServerConfig("oc", url),), listen_port=0, timeouts=FAST))
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await wait_for(
                lambda: (
                    sample(
                        daemon,
                        "opencode_watchdog_events_total",
                        server="oc",
                        type="server.heartbeat",
                    )
                    == 1.0
                ),
                "the heartbeat after the attacks",
            )
            tg.cancel_scope.cancel()
    assert sample(daemon, "opencode_watchdog_malformed_events_total", server="oc") == 2.0
    # The two share a message id: one prompt, timed from its arrival.
    assert sample(daemon, "opencode_watchdog_unusable_prompt_times_total", server="oc") == 1.0
    assert sample(daemon, "opencode_watchdog_prompts_accepted_total", server="oc") == 1.0
    assert daemon.watches[0].status.state.value == "up"


async def test_rest_answer_nested_too_deeply_is_a_protocol_error() -> None:
    """A REST answer nested 100 000 deep is refused as not JSON (a StreamError), not a crash."""

    async def handler(request: Request, stream: ByteStream) -> None:
        await answer_json(stream, b"[" * 100_000 + b"]" * 100_000)

    async with hostile_server(handler) as url, httpx.AsyncClient() as client:
        with pytest.raises(ProtocolError, match="not JSON"):
            await ServerApi(client, url).get("/session/status")
