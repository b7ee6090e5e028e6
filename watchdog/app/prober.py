"""Runs the admission probe inside the daemon: every interval, per server and shape; metrics, alerts.

A failed probe is an alert in every sink (log, webhooks, Alertmanager) and resolves when a probe of
the same server and shape succeeds. Probe prompts never reach the trackers (see watch.py).
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import structlog
from prometheus_client import CollectorRegistry, Gauge

from watchdog import USER_AGENT
from watchdog.core.clock import iso
from watchdog.core.settings import ProbeShape, ServerConfig
from watchdog.io.outbox import Letter
from watchdog.io.probe import Probe, ProbeResult, ProbeSessions, ProbeSpec, Step
from watchdog.sinks import Sink
from watchdog.sinks.alertmanager import AlertmanagerSink
from watchdog.sinks.firing import FiringAlerts, ProbeFiring, probe_identity
from watchdog.sinks.webhook import WebhookSink

log = structlog.get_logger("watchdog.probe")

PROBE_ALERT = "OpenCodeProbeFailed"
PROBE_KIND = "probe_failed"


class ProbeMetrics:
    """`opencode_watchdog_probe_*`: the latest result per server and shape, and step durations."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.success = Gauge(
            "opencode_watchdog_probe_success",
            "1 if the latest admission probe of the server with this payload shape passed, else 0.",
            ["server", "shape"],
            registry=registry,
        )
        self.duration = Gauge(
            "opencode_watchdog_probe_duration_seconds",
            "How long each step of the latest admission probe took (the failed step included).",
            ["server", "shape", "step"],
            registry=registry,
        )
        self.last_success = Gauge(
            "opencode_watchdog_probe_last_success_timestamp_seconds",
            "When an admission probe of the server with this shape last passed.",
            ["server", "shape"],
            registry=registry,
        )

    def record(self, result: ProbeResult) -> None:
        """Export one result."""
        server, shape = result.server, result.shape.value
        self.success.labels(server=server, shape=shape).set(1.0 if result.ok else 0.0)
        taken = {s.step: s.seconds for s in result.steps}
        for step in Step:
            if step in taken:
                self.duration.labels(server=server, shape=shape, step=step.value).set(taken[step])
        if result.ok:
            self.last_success.labels(server=server, shape=shape).set(
                result.started_at + result.seconds
            )


@dataclass(slots=True)
class _Failing:
    """A probe alert that is firing."""

    since: float
    result: ProbeResult


class ProbeAlerts:
    """Fires an alert on the first failure of a server and shape, resolves it on the next pass."""

    def __init__(
        self,
        sinks: Callable[[], Iterable[Sink]],
        clock: Callable[[], float],
        firing: FiringAlerts | None = None,
    ) -> None:
        self._sinks = sinks
        self._clock = clock
        self._firing = firing  # the daemon's store of firing alerts, kept across reloads
        self.failing: dict[tuple[str, ProbeShape], _Failing] = {}

    def forget_server(self, server: str) -> None:
        """The server left the configuration: its probe alerts resolve, nobody probes it now."""
        for key, failing in list(self.failing.items()):
            if key[0] == server:
                del self.failing[key]
                log.info("probe.alert_released", server=server, shape=key[1].value)
                self._deliver(failing.result, firing=False, since=failing.since)

    def record(self, result: ProbeResult) -> None:
        """Log every result; fire or resolve alerts as the state changes."""
        key = (result.server, result.shape)
        failing = self.failing.get(key)
        ids = {"server": result.server, "shape": result.shape.value}
        if not result.ok:
            step = result.failed_step.value if result.failed_step else None
            if failing is not None:
                failing.result = result
                log.warning("probe.still_failing", step=step, reason=result.reason, **ids)
                return
            self.failing[key] = _Failing(since=result.started_at, result=result)
            log.warning(
                "probe.failed",
                step=step,
                reason=result.reason,
                session_id=result.session_id,
                message_id=result.message_id,
                **ids,
            )
            self._deliver(result, firing=True, since=result.started_at)
            return
        if failing is None:
            log.info("probe.ok", seconds=round(result.seconds, 3), **ids)
            return
        del self.failing[key]
        log.info("probe.recovered", failing_since=iso(failing.since), **ids)
        self._deliver(result, firing=False, since=failing.since)

    def _deliver(self, result: ProbeResult, *, firing: bool, since: float) -> None:
        body = alert_document(result, firing=firing, since=since, at=self._clock())
        what = f"{PROBE_KIND}/{body['status']} {result.server} {result.shape.value}"
        key = probe_identity(result.server, result.shape.value)
        probe = ProbeFiring(
            server=result.server,
            shape=result.shape.value,
            labels=_labels(result),
            annotations=_annotations(result),
            document=body,
            since=since,
            what=what,
        )
        for sink in self._sinks():
            if isinstance(sink, WebhookSink):
                sink.outbox.put(Letter(body=body, what=what))
            elif isinstance(sink, AlertmanagerSink):
                if firing:
                    sink.fire_alert(probe)
                else:
                    sink.resolve_alert(key, what)
        # After the sinks, as for prompts: a resolution is sent only for what was firing.
        if self._firing is not None:
            if firing:
                self._firing.fire_probe(probe)
            else:
                self._firing.resolve(key)


def alert_document(result: ProbeResult, *, firing: bool, since: float, at: float) -> dict[str, Any]:
    """The webhook body of a probe alert or its resolution."""
    body: dict[str, Any] = {
        "status": "firing" if firing else "resolved",
        "kind": PROBE_KIND,
        "server": result.server,
        "shape": result.shape.value,
        "since": iso(since),
        "at": iso(at),
    }
    if firing:
        body.update(
            step=result.failed_step.value if result.failed_step else None,
            reason=result.reason,
            session_id=result.session_id,
            message_id=result.message_id,
            steps={s.step.value: round(s.seconds, 3) for s in result.steps},
        )
    return body


def _labels(result: ProbeResult) -> dict[str, str]:
    # Fixed per server and shape: the failing step may change while the alert fires.
    return {
        "alertname": PROBE_ALERT,
        "server": result.server,
        "shape": result.shape.value,
        "severity": "warning",
    }


def _annotations(result: ProbeResult) -> dict[str, str]:
    step = result.failed_step.value if result.failed_step else "?"
    return {
        "summary": (
            f"OpenCode server {result.server} does not take in prompts "
            f"({result.shape.value} payload): the probe failed at {step}."
        ),
        "description": f"{result.reason} (probe session {result.session_id}).",
    }


class Prober:
    """Probes every configured server with each shape, one task per server."""

    def __init__(
        self,
        servers: Callable[[], Sequence[ServerConfig]],
        sessions: Callable[[str], ProbeSessions],
        *,
        interval: float,
        shapes: Sequence[ProbeShape],
        registry: CollectorRegistry,
        sinks: Callable[[], Iterable[Sink]],
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        spec: ProbeSpec | None = None,
        firing: FiringAlerts | None = None,
    ) -> None:
        self._servers = servers
        self._sessions = sessions
        self.interval = interval
        self.shapes = tuple(shapes)
        self.metrics = ProbeMetrics(registry)
        self.alerts = ProbeAlerts(sinks, clock, firing)
        self.latest: dict[tuple[str, ProbeShape], ProbeResult] = {}
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._spec = spec or ProbeSpec()

    async def run(self) -> None:
        """Probe, sleep the interval, repeat; servers added by a reload join the next round."""
        while True:
            async with anyio.create_task_group() as tg:
                for server in self._servers():
                    tg.start_soon(self.probe_server, server)
            await self._sleep(self.interval)

    async def probe_server(self, server: ServerConfig) -> None:
        """Probe one server with each shape in turn; a bug here is logged, never fatal."""
        try:
            await self._probe_server(server)
        except Exception:
            log.exception("probe.crashed", server=server.name)

    async def _probe_server(self, server: ServerConfig) -> None:
        auth = httpx.BasicAuth(server.username, server.password) if server.password else None
        # The same trust as the server's stream: its private CA, never verification switched off.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=server.ca_file) if server.ca_file else True
        )
        async with httpx.AsyncClient(
            transport=self._transport,
            auth=auth,
            timeout=httpx.Timeout(10.0, read=30.0),
            verify=verify,
            headers={"user-agent": USER_AGENT},
        ) as client:
            probe = Probe(
                client,
                server.url,
                server.name,
                sessions=self._sessions(server.name),
                clock=self._clock,
            )
            for shape in self.shapes:
                spec = ProbeSpec(
                    shape=shape,
                    agent=self._spec.agent,
                    model=self._spec.model,
                    directory=self._spec.directory,
                    stored_timeout=min(self._spec.stored_timeout, self.interval),
                )
                result = await probe.run(spec)
                self.record(result)

    def forget_server(self, server: str) -> None:
        """The server left the configuration: resolve its probe alerts, drop its results."""
        self.alerts.forget_server(server)
        for key in [k for k in self.latest if k[0] == server]:
            del self.latest[key]
            for gauge in (self.metrics.success, self.metrics.last_success):
                with contextlib.suppress(KeyError):
                    gauge.remove(server, key[1].value)

    def record(self, result: ProbeResult) -> None:
        """Keep, export and alert on one result (of a server still configured)."""
        if all(server.name != result.server for server in self._servers()):
            return  # a probe in flight when a reload removed its server: nobody watches it now
        self.latest[(result.server, result.shape)] = result
        self.metrics.record(result)
        self.alerts.record(result)

    def describe(self, server: str) -> list[dict[str, Any]]:
        """The latest result of each shape for one server (the `/status` view)."""
        return [
            self.latest[(server, shape)].describe()
            for shape in self.shapes
            if (server, shape) in self.latest
        ]
