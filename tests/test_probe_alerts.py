"""A failed probe fires once in every sink and resolves on the next pass; its metrics follow it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from watchdog.app.prober import ProbeAlerts, ProbeMetrics
from watchdog.core.settings import ProbeShape
from watchdog.io.outbox import Outbox
from watchdog.io.probe import ProbeResult, Step, StepTiming
from watchdog.sinks import Sink
from watchdog.sinks.alertmanager import AlertmanagerSink
from watchdog.sinks.webhook import WebhookSink

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def result(ok: bool, at: float, shape: ProbeShape = ProbeShape.CURRENT) -> ProbeResult:
    steps = (
        StepTiming(Step.SESSION, 0.01, True),
        StepTiming(Step.ACCEPTED, 0.02, True),
        StepTiming(Step.STORED, 0.03 if ok else 10.0, ok),
    )
    return ProbeResult(
        server="oc",
        shape=shape,
        ok=ok,
        started_at=at,
        steps=(*steps, StepTiming(Step.NO_ERROR, 1.0, True)) if ok else steps,
        failed_step=None if ok else Step.STORED,
        reason=None if ok else "no user message stored within 10s of the 204",
        session_id="ses_probe",
        message_id="msg_probe",
    )


class Received:
    """Every JSON body POSTed, by URL."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200)

    def at(self, url: str) -> list[Any]:
        return [body for u, body in self.bodies if u == url]


async def test_failure_fires_once_everywhere_and_resolves_on_success() -> None:
    """Webhook and Alertmanager get one firing alert per failing streak and one resolution."""
    received = Received()
    now = [T0]
    async with httpx.AsyncClient(transport=httpx.MockTransport(received.handle)) as client:
        webhook = WebhookSink(Outbox("webhook", "http://hook.test/h", client, count=lambda r: None))
        alertmanager = AlertmanagerSink(
            ["http://am.test:9093"], client, count=lambda r: None, clock=lambda: now[0]
        )
        sinks: list[Sink] = [webhook, alertmanager]
        alerts = ProbeAlerts(lambda: sinks, clock=lambda: now[0])
        with capture_logs() as logs:
            alerts.record(result(True, T0))
            now[0] = T0 + 60
            alerts.record(result(False, T0 + 60))
            now[0] = T0 + 120
            alerts.record(result(False, T0 + 120))
            alertmanager.resend()  # still firing: Alertmanager hears of it again
            now[0] = T0 + 180
            alerts.record(result(True, T0 + 180))
            alerts.record(result(True, T0 + 240))
        async with anyio.create_task_group() as tg:
            for outbox in [webhook.outbox, *alertmanager.outboxes]:
                tg.start_soon(outbox.run)
            for outbox in [webhook.outbox, *alertmanager.outboxes]:
                await outbox.drain(10.0)
            tg.cancel_scope.cancel()
    assert [r["event"] for r in logs] == [
        "probe.ok",
        "probe.failed",
        "probe.still_failing",
        "probe.recovered",
        "probe.ok",
    ]
    hooks = received.at("http://hook.test/h")
    assert hooks == [
        {
            "status": "firing",
            "kind": "probe_failed",
            "server": "oc",
            "shape": "current",
            "since": "2023-11-14T22:14:20.000Z",
            "at": "2023-11-14T22:14:20.000Z",
            "step": "stored",
            "reason": "no user message stored within 10s of the 204",
            "session_id": "ses_probe",
            "message_id": "msg_probe",
            "steps": {"session": 0.01, "accepted": 0.02, "stored": 10.0},
        },
        {
            "status": "resolved",
            "kind": "probe_failed",
            "server": "oc",
            "shape": "current",
            "since": "2023-11-14T22:14:20.000Z",
            "at": "2023-11-14T22:16:20.000Z",
        },
    ]
    posts = received.at("http://am.test:9093/api/v2/alerts")
    labels = {
        "alertname": "OpenCodeProbeFailed",
        "server": "oc",
        "shape": "current",
        "severity": "warning",
    }
    assert [[a["labels"] for a in post] for post in posts] == [[labels]] * 3
    assert [post[0]["endsAt"] for post in posts] == [
        "2023-11-14T22:18:20.000Z",  # fired at T0+60, valid four resend intervals
        "2023-11-14T22:19:20.000Z",  # the resend at T0+120
        "2023-11-14T22:16:20.000Z",  # resolved: ends now (T0+180)
    ]
    assert posts[0][0]["startsAt"] == "2023-11-14T22:14:20.000Z"
    assert "stored" in posts[0][0]["annotations"]["summary"]
    assert alertmanager.active == {}


def test_metrics_follow_the_latest_result() -> None:
    """success is 0/1, durations per step, and the last-success time only moves on a pass."""
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry)
    labels = {"server": "oc", "shape": "legacy"}
    metrics.record(result(True, T0, ProbeShape.LEGACY))
    assert registry.get_sample_value("opencode_watchdog_probe_success", labels) == 1.0
    passed_at = registry.get_sample_value(
        "opencode_watchdog_probe_last_success_timestamp_seconds", labels
    )
    assert passed_at == pytest.approx(T0 + 1.06)
    metrics.record(result(False, T0 + 60, ProbeShape.LEGACY))
    assert registry.get_sample_value("opencode_watchdog_probe_success", labels) == 0.0
    assert (
        registry.get_sample_value("opencode_watchdog_probe_last_success_timestamp_seconds", labels)
        == passed_at
    )
    assert (
        registry.get_sample_value(
            "opencode_watchdog_probe_duration_seconds", {**labels, "step": "stored"}
        )
        == 10.0
    )
