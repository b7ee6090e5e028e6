"""Wires the pieces into the long-running service: one task per stream, one for timers, one for HTTP."""

from __future__ import annotations

import ipaddress
import logging
import math
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry

from watchdog import USER_AGENT, __version__
from watchdog.app.config import Config
from watchdog.app.logs import report_suppressed
from watchdog.app.page import PageView, ServerView
from watchdog.app.page import render as render_page
from watchdog.app.prober import Prober
from watchdog.app.views import SESSIONS_LISTED, incident_doc
from watchdog.app.watch import ServerWatch, StreamState, v2_window
from watchdog.core.clock import iso
from watchdog.core.settings import ApiMode, ConfigError, ServerConfig
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Transition
from watchdog.io.endpoint import Endpoint, Health, bound_port
from watchdog.io.outbox import Letter, Outbox
from watchdog.io.probe import ProbeSessions, ProbeSpec
from watchdog.io.record import Recorder
from watchdog.io.sdnotify import Notifier
from watchdog.io.source import EventSource, ServerApi
from watchdog.io.supervise import supervise
from watchdog.sinks import Sink
from watchdog.sinks.alert import describe, document
from watchdog.sinks.alertmanager import AlertmanagerSink
from watchdog.sinks.firing import FiringAlerts
from watchdog.sinks.log import LogSink
from watchdog.sinks.metrics import Metrics
from watchdog.sinks.recent import RecentIncidents
from watchdog.sinks.webhook import WebhookSink

log = structlog.get_logger("watchdog.daemon")

# The timer loop wakes at least this often, so the systemd watchdog ping proves it still turns.
MAX_TIMER_SLEEP = 5.0
READY_WAIT = 10.0  # report READY even if a server is down: the daemon itself is up
RELOAD_GRACE = 0.5  # letters of sinks a reload replaced get this long to go out
DELIVERY_RESULTS = ("delivered", "retried", "failed", "dropped", "undelivered")
# OpenCode sends a heartbeat every 10 s: a shorter liveness window reopens healthy streams.
HEARTBEAT_INTERVAL = 10.0
LOG_SUMMARY_INTERVAL = 10.0  # how often "N more like this" summaries are written


class Timers:
    """Calls every tracker's ``tick`` at its next deadline; no polling loop spins."""

    def __init__(
        self,
        watches: Sequence[ServerWatch],
        dispatch: Callable[[list[Transition]], None],
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._watches = watches
        self._dispatch = dispatch
        self._clock = clock  # wall: what the transitions say to people
        self._monotonic = monotonic  # deadlines: a wall-clock step moves none of them
        self._wake = anyio.Event()
        self._scheduled = math.inf
        self.last_turn = time.monotonic()

    def poke(self) -> None:
        """A deadline may have moved earlier; recompute."""
        deadline = min(
            (d for w in self._watches if (d := w.core.next_deadline()) is not None),
            default=math.inf,
        )
        if deadline < self._scheduled:
            self._wake.set()

    async def run(self) -> None:
        """Tick, sleep until the earliest deadline (or a poke), repeat."""
        while True:
            self.last_turn = time.monotonic()
            now, wall = self._monotonic(), self._clock()
            failed = False
            for watch in self._watches:
                try:
                    self._dispatch(watch.core.tick(now, wall))
                except Exception:
                    # Our bug, in one server's tracker: the other servers' timers still fire.
                    log.exception("timers.tick_failed", server=watch.name)
                    failed = True
            self._scheduled = min(
                (d for w in self._watches if (d := w.core.next_deadline()) is not None),
                default=math.inf,
            )
            delay = min(MAX_TIMER_SLEEP, max(0.0, self._scheduled - self._monotonic()))
            if failed:
                delay = max(delay, 1.0)  # its deadline stays past: do not spin on it
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()


@dataclass(slots=True)
class _Alerting:
    """The sinks that deliver alerts over HTTP, replaced as a whole when a reload changes them."""

    sinks: list[Sink]
    outboxes: list[Outbox]
    alertmanager: AlertmanagerSink | None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


@dataclass(slots=True)
class _Follower:
    """A running watch: its settings, its HTTP client and the scope that stops it."""

    server: ServerConfig
    liveness: float
    client: httpx.AsyncClient
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


# How long past the headers timeout the probe's first round waits for every server's API.
DETECTION_GRACE = 5.0


class Daemon:
    """The service: build it from a Config, then ``await run()`` until cancelled or signalled.

    Build it inside the event loop: it creates cancel scopes for its streams and sinks.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        notifier: Notifier | None = None,
        reload: Callable[[], Config] | None = None,
        probe_spec: ProbeSpec | None = None,
    ) -> None:
        self.config = config
        self.clock = clock  # wall: for people (alerts, `/status`, the page)
        self.monotonic = monotonic  # deadlines, waits and ages
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry, lambda: [w.snapshot() for w in self.watches])
        self._transport = transport
        self._notifier = notifier or Notifier()
        self._reload = reload
        self._tg: TaskGroup | None = None
        self._sink_client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(10.0),
            headers={"user-agent": USER_AGENT},
        )
        self.recent = RecentIncidents()
        # What fires now, kept across reloads: the sinks render and deliver, this remembers.
        self.firing = FiringAlerts(on_untracked=self._untracked)
        self.recorder = _recorder(config)
        self._followers: dict[str, _Follower] = {}
        self._warned: set[str] = set()
        self.probe_sessions: dict[str, ProbeSessions] = {}
        self.watches: list[ServerWatch] = [
            self._watch(
                server,
                config.liveness_timeout,
                Tracker(server.name, config.timeouts, config.limits),
            )
            for server in config.servers
        ]
        self.alerting = self._alerting(config)
        self.timers = Timers(self.watches, self.dispatch, clock, monotonic)
        self.endpoint = Endpoint(
            self.registry, self.health, self.status, web=config.web, page=self.page
        )
        self.prober: Prober | None = None
        if config.probe_interval is not None:
            self.prober = Prober(
                self._probe_targets,
                lambda name: self.probe_sessions.setdefault(name, ProbeSessions()),
                interval=config.probe_interval,
                shapes=config.probe_shapes,
                registry=self.registry,
                sinks=lambda: self.sinks,
                transport=transport,
                clock=clock,
                spec=probe_spec,
                firing=self.firing,
            )
        # The status page shows the latest probe results; without probes it leaves them out.
        self.page_probes: Callable[[], Sequence[Mapping[str, object]]] | None = None
        if self.prober is not None:
            prober = self.prober
            self.page_probes = lambda: [
                result for w in self.watches for result in prober.describe(w.name)
            ]

    @property
    def sinks(self) -> list[Sink]:
        """Every sink, in delivery order."""
        return [self.metrics, _LOG_SINK, self.recent, *self.alerting.sinks]

    def _watch(
        self,
        server: ServerConfig,
        liveness: float,
        tracker: Tracker,
        config: Config | None = None,
    ) -> ServerWatch:
        limits = config or self.config  # a reload builds watches before it adopts its config
        auth = httpx.BasicAuth(server.username, server.password) if server.password else None
        # The read timeout is the liveness window: OpenCode sends a heartbeat every 10 s, so a
        # stream (or a server still booting) that sends nothing for longer is dead.
        # A private CA adds to nothing and switches nothing off: only these CAs are trusted.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=server.ca_file) if server.ca_file else True
        )
        # An OpenCode 2 stream is quiet for 15 s between its heartbeat comments: its read timeout
        # is its liveness window, three of them (watch.py), when the liveness timeout is shorter.
        read = liveness if server.api is ApiMode.V1 else v2_window(liveness)
        client = httpx.AsyncClient(
            transport=self._transport,
            auth=auth,
            timeout=httpx.Timeout(10.0, read=read),
            verify=verify,
            headers={"user-agent": USER_AGENT},
        )
        self._followers[server.name] = _Follower(server, liveness, client)
        self.metrics.register_server(server.name)
        too_large = self.metrics.oversized.labels(server=server.name, what="answer")
        return ServerWatch(
            server.name,
            server.url,
            EventSource(
                client,
                server.url,
                max_event_bytes=limits.max_event_bytes,
                headers_timeout=limits.headers_timeout,
            ),
            tracker,
            api=ServerApi(
                client,
                server.url,
                max_body_bytes=limits.max_body_bytes,
                on_too_large=too_large.inc,
            ),
            metrics=self.metrics,
            dispatch=self.dispatch,
            reschedule=self.timers_poke,
            clock=self.clock,
            monotonic=self.monotonic,
            liveness=liveness,
            probe_sessions=self.probe_sessions.setdefault(server.name, ProbeSessions()),
            recorder=self.recorder,
            api_mode=server.api.value,
        )

    def _probe_targets(self) -> list[ServerConfig]:
        """The servers the admission probe may test: all but those that speak OpenCode 2, which
        has no prompt that is stored without running the model (README, "OpenCode 2"). A server
        whose API is not known yet (it could not be asked) is probed as 1.x: the probe then says
        why it cannot reach it."""
        speaks = {w.name: w.api_in_use for w in self.watches}
        return [
            s for s in self.config.servers if s.api is not ApiMode.V2 and speaks.get(s.name) != "v2"
        ]

    async def _probe_after_detection(self) -> None:
        """The probe's first round waits (a bounded while) for each server's API to be known."""
        assert self.prober is not None
        with anyio.move_on_after(self.config.headers_timeout + DETECTION_GRACE):
            for watch in list(self.watches):
                await watch.api_known.wait()
        await self.prober.run()

    def _alerting(self, config: Config) -> _Alerting:
        sinks: list[Sink] = []
        outboxes: list[Outbox] = []
        for url in config.webhooks:
            outbox = Outbox(
                "webhook", url, self._sink_client, count=self._delivery_counter("webhook")
            )
            outboxes.append(outbox)
            sinks.append(WebhookSink(outbox))
        alertmanager = None
        if config.alertmanagers:
            alertmanager = AlertmanagerSink(
                config.alertmanagers,
                self._sink_client,
                count=self._delivery_counter("alertmanager"),
                generator_url=f"http://{config.listen_host}:{config.listen_port}/status",
                clock=self.clock,
                firing=self.firing,
            )
            outboxes.extend(alertmanager.outboxes)
            sinks.append(alertmanager)
        return _Alerting(sinks, outboxes, alertmanager)

    def _delivery_counter(self, sink: str) -> Callable[[str], None]:
        # Series exist at zero from the start, so the first failure shows in rate() too.
        for result in DELIVERY_RESULTS:
            self.metrics.alert_deliveries.labels(sink=sink, result=result)

        def count(result: str) -> None:
            self.metrics.alert_deliveries.labels(sink=sink, result=result).inc()

        return count

    def dispatch(self, transitions: list[Transition]) -> None:
        """Hand transitions to every sink; a failing sink is our bug, logged, never fatal."""
        for transition in transitions:
            for sink in self.sinks:
                try:
                    sink.emit(transition)
                except Exception:
                    log.exception("sink.failed", sink=type(sink).__name__)
            # After the sinks: a resolution is delivered for an alert still known to fire.
            self.firing.note(transition)

    def _untracked(self, what: str) -> None:
        """An alert past the cap of firing alerts: delivered once, never re-sent."""
        resent = self.alerting.alertmanager is not None
        if resent:
            self.metrics.alert_deliveries.labels(sink="alertmanager", result="untracked").inc()
        log.log(
            logging.ERROR if resent else logging.WARNING,
            "alert.untracked",
            what=what,
            reason=f"{self.firing.max_active} alerts already firing; this one will not be re-sent",
        )

    def _tell_new_webhooks(self, old: Config, fresh: Config) -> None:
        """A webhook added by a reload hears of every alert firing now, as it fired."""
        added = {url for url in fresh.webhooks if url not in old.webhooks}
        if not added or not len(self.firing):
            return
        for sink in self.alerting.sinks:
            if isinstance(sink, WebhookSink) and sink.outbox.url in added:
                for firing in self.firing:
                    if firing.stall is not None:
                        letter = Letter(body=document(firing.stall), what=describe(firing.stall))
                    else:
                        assert firing.probe is not None
                        letter = Letter(body=firing.probe.document, what=firing.probe.what)
                    sink.outbox.put(letter)
        log.info("alerts.told_new_sinks", webhooks=len(added), firing=len(self.firing))

    def timers_poke(self) -> None:
        """A deadline may have moved earlier (new prompt, unblock, finished tool, reload)."""
        self.timers.poke()

    def health(self) -> Health:
        """Healthy when every stream is up and has sent something within the liveness window."""
        now = self.monotonic()
        servers: dict[str, Any] = {}
        ok = True
        for w in self.watches:
            fresh = w.status.last_event_mono is not None and now - w.status.last_event_mono <= (
                w.liveness_window or self.config.liveness_timeout
            )
            live = w.status.state is StreamState.UP and fresh
            ok = ok and live
            servers[w.name] = {"state": w.status.state.value, "live": live}
            if w.status.state is StreamState.CONNECTING:
                servers[w.name]["reason"] = "connecting"
                if w.status.last_error:
                    servers[w.name]["previous_error"] = w.status.last_error
            elif not live:
                servers[w.name]["reason"] = w.status.last_error or (
                    "no event within the liveness window"
                    if w.status.state is StreamState.UP
                    else "not connected yet"
                )
        return Health(ok=ok, detail={"servers": servers})

    def status(self) -> dict[str, Any]:
        """The `/status` document."""
        now = self.clock()
        servers = [w.describe() for w in self.watches]
        for server in servers:
            server["probes"] = self.prober.describe(server["server"]) if self.prober else []
        return {
            "version": __version__,
            "now": iso(now),
            "servers": servers,
            # The same ring the page shows, newest first: stalls and failures of every server.
            "recent": [incident_doc(item) for item in self.recent.latest()],
            "recent_listed_max": self.recent.size,
        }

    def page(self) -> bytes:
        """The HTML status page at `/`."""
        now, mono = self.clock(), self.monotonic()
        servers = [
            ServerView(
                name=w.name,
                url=w.url,
                state=w.status.state.value,
                since=w.status.since,
                last_event_at=w.status.last_event_at,
                last_error=w.status.last_error,
                reconnects=w.status.reconnects,
                pending=w.tracker.pending(mono),
                sessions=w.tracker.sessions(mono, now, limit=SESSIONS_LISTED),
                api=w.api_in_use,
            )
            for w in self.watches
        ]
        probes = self.page_probes() if self.page_probes is not None else None
        return render_page(PageView(__version__, now, servers, self.recent.latest(), probes=probes))

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or SIGTERM/SIGINT; reports the metrics port once listening."""
        try:
            listener = await self.endpoint.bind(self.config.listen_host, self.config.listen_port)
        except OSError as exc:
            raise ConfigError(
                "--listen",
                f"cannot listen on {self.config.listen_host}:{self.config.listen_port}: "
                f"{exc.strerror or exc}",
            ) from None
        port = bound_port(listener)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self.endpoint.serve, listener)
                log.info(
                    "daemon.started",
                    version=__version__,
                    listen=f"{self.config.listen_host}:{port}",
                    page=page_url(self.config, port),
                    servers=[w.name for w in self.watches],
                    first_response_timeout=self.config.timeouts.first_response,
                    inactivity_timeout=self.config.timeouts.inactivity,
                    tool_timeout=self.config.timeouts.tool,
                    turn_start_timeout=self.config.timeouts.turn_start,
                )
                self._warn_config(self.config)
                self._warn_exposed()
                if self.config.liveness_timeout <= HEARTBEAT_INTERVAL:
                    log.warning(
                        "config.liveness_too_short",
                        liveness_timeout=self.config.liveness_timeout,
                        reason="OpenCode sends a heartbeat every 10 s; streams will be reopened",
                    )
                tg.start_soon(self._deliver, self.alerting)
                for watch in self.watches:
                    tg.start_soon(self._follow, watch, self._followers[watch.name])
                tg.start_soon(self._supervised, "timers", self.timers.run)
                if self.prober is not None:
                    tg.start_soon(self._supervised, "prober", self._probe_after_detection)
                tg.start_soon(self._signals, tg.cancel_scope)
                tg.start_soon(self._report_suppressed_logs)
                tg.start_soon(self._systemd)
                task_status.started(port)
        finally:
            with anyio.CancelScope(shield=True):
                self._notifier.stopping()
                await self._flush_alerts(self.config.shutdown_grace)
                for follower in self._followers.values():
                    await follower.client.aclose()
                await self._sink_client.aclose()
                report_suppressed(everything=True)
                if self.recorder is not None:
                    self.recorder.close()
                log.info("daemon.stopped")

    async def _supervised(
        self, task: str, run: Callable[[], Awaitable[None]], server: str = ""
    ) -> None:
        """Run ``run``, restarted with backoff whenever it dies unexpectedly (logged, counted)."""
        restarts = self.metrics.task_restarts.labels(task=task, server=server)
        await supervise(task, run, on_crash=restarts.inc, server=server or None)

    async def _follow(self, watch: ServerWatch, follower: _Follower) -> None:
        with follower.scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._supervised, "stream", watch.follow, watch.name)
                tg.start_soon(self._supervised, "reconcile", watch.reconcile_forever, watch.name)

    async def _deliver(self, alerting: _Alerting) -> None:
        with alerting.scope:
            async with anyio.create_task_group() as tg:
                for outbox in alerting.outboxes:
                    tg.start_soon(self._supervised, "delivery", outbox.run)
                if alerting.alertmanager is not None:
                    tg.start_soon(self._supervised, "alertmanager", alerting.alertmanager.run)

    async def _retire(self, alerting: _Alerting) -> None:
        """Stop what a reload replaced: letters already queued get a short grace."""
        with anyio.CancelScope(shield=True):
            for outbox in alerting.outboxes:
                await outbox.drain(RELOAD_GRACE)
        alerting.scope.cancel()
        for outbox in alerting.outboxes:
            outbox.abandon()

    async def _flush_alerts(self, grace: float) -> None:
        """Shutdown: deliver what is queued within ``grace`` seconds, then count what was not.

        The delivery tasks were cancelled with everything else; each outbox keeps the letter it
        was sending, so they are simply run again, in hurry mode, for the grace period.
        """
        outboxes = self.alerting.outboxes
        queued = sum(o.in_flight for o in outboxes)
        if not queued:
            return
        log.info("alerts.flushing", queued=queued, grace_seconds=grace)
        with anyio.move_on_after(grace):
            async with anyio.create_task_group() as tg:
                for outbox in outboxes:
                    tg.start_soon(outbox.run)
                for outbox in outboxes:
                    await outbox.drain(grace)
                tg.cancel_scope.cancel()
        undelivered = sum(outbox.abandon() for outbox in outboxes)
        log.log(
            logging.ERROR if undelivered else logging.INFO,
            "alerts.flushed",
            delivered=queued - undelivered,
            undelivered=undelivered,
        )

    @staticmethod
    async def _report_suppressed_logs() -> None:
        """Summarise rate-limited log lines even when the flood has stopped."""
        while True:
            await anyio.sleep(LOG_SUMMARY_INTERVAL)
            report_suppressed()

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload_config()
                    continue
                log.info("daemon.stopping", signal=signal.Signals(signum).name)
                scope.cancel()
                return

    def reload_config(self) -> None:
        """SIGHUP: apply a fresh config (timeouts, servers, sinks); tracked prompts are kept."""
        if self._reload is None or self._tg is None:
            log.warning("config.reload_skipped", reason="no config source to reload")
            return
        # Everything is parsed and checked first (secrets, CA files, URLs); only a configuration
        # that loaded whole is applied. Any failure keeps the running one.
        try:
            fresh = self._reload()
        except ConfigError as exc:
            self.metrics.config_reload_failures.inc()
            log.error("config.reload_failed", error=str(exc), kept="the running configuration")
            return
        except Exception as exc:  # a reload must never take the daemon down
            self.metrics.config_reload_failures.inc()
            log.error(
                "config.reload_failed",
                error=f"{type(exc).__name__}: {exc}",
                kept="the running configuration",
            )
            return
        tg = self._tg
        self._warn_config(fresh)
        kept = {w.name: w for w in self.watches}
        watches: list[ServerWatch] = []
        for server in fresh.servers:
            old = kept.pop(server.name, None)
            follower = self._followers.get(server.name)
            if (
                old is not None
                and follower is not None
                and (follower.server == server and follower.liveness == fresh.liveness_timeout)
            ):
                watches.append(old)
                continue
            if old is not None:
                self._stop_follower(server.name, tg)
            tracker = (
                old.tracker
                if old is not None
                else Tracker(server.name, fresh.timeouts, fresh.limits)
            )
            watch = self._watch(server, fresh.liveness_timeout, tracker, fresh)
            watches.append(watch)
            tg.start_soon(self._follow, watch, self._followers[server.name])
        for name, gone in kept.items():
            self._stop_follower(name, tg)
            log.warning("server.removed", server=name, pending_released=gone.tracker.pending_count)
            # Nobody watches its prompts any more: each ends evicted, its alerts resolved.
            self.dispatch(gone.tracker.release(self.monotonic(), self.clock(), "server_removed"))
            if self.prober is not None:
                self.prober.forget_server(name)
            for firing in self.firing.of_server(name):  # none should be left: say so if any is
                log.error("alert.left_firing", server=name, key=list(firing.key))
        self.watches[:] = watches
        for watch in self.watches:
            watch.tracker.set_timeouts(fresh.timeouts)
            if watch.tracker.limits != fresh.limits:
                self.dispatch(
                    watch.tracker.set_limits(fresh.limits, self.monotonic(), self.clock())
                )
        if (fresh.webhooks, fresh.alertmanagers) != (
            self.config.webhooks,
            self.config.alertmanagers,
        ):
            retired, self.alerting = self.alerting, self._alerting(fresh)
            tg.start_soon(self._deliver, self.alerting)  # Alertmanager: sends what fires now
            tg.start_soon(self._retire, retired)
            self._tell_new_webhooks(self.config, fresh)
        if (fresh.listen_host, fresh.listen_port) != (
            self.config.listen_host,
            self.config.listen_port,
        ):
            log.warning("config.listen_unchanged", reason="a new --listen needs a restart")
        self.config = replace(
            fresh, listen_host=self.config.listen_host, listen_port=self.config.listen_port
        )
        log.info(
            "config.reloaded",
            servers=[w.name for w in self.watches],
            first_response_timeout=fresh.timeouts.first_response,
            inactivity_timeout=fresh.timeouts.inactivity,
            tool_timeout=fresh.timeouts.tool,
            turn_start_timeout=fresh.timeouts.turn_start,
            webhooks=len(fresh.webhooks),
            alertmanagers=len(fresh.alertmanagers),
        )
        self.timers.poke()

    def _warn_exposed(self) -> None:
        """Off loopback, /status shows session ids and directories to whoever can connect."""
        host = self.config.listen_host
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        web = self.config.web
        missing = [
            name
            for name, present in (("TLS", web and web.tls), ("basic auth", web and web.users))
            if not present
        ]
        if not loopback and missing:
            log.warning(
                "endpoint.exposed",
                listen=host,
                missing=missing,
                reason="listening beyond loopback: /metrics and /status are readable by anyone "
                "who can connect; give --web-config with tls_server_config and basic_auth_users",
            )

    def _warn_config(self, config: Config) -> None:
        """Each configuration warning once per process, not again on every reload."""
        for warning in config.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                log.warning("config.warning", warning=warning)

    def _stop_follower(self, name: str, tg: TaskGroup) -> None:
        follower = self._followers.pop(name)
        follower.scope.cancel()
        tg.start_soon(follower.client.aclose)

    async def _systemd(self) -> None:
        with anyio.move_on_after(READY_WAIT):
            while any(w.status.state is StreamState.CONNECTING for w in self.watches):  # noqa: ASYNC110 - a bounded start-up wait; an Event per watch would be more code
                await anyio.sleep(0.05)
        up = sum(w.status.state is StreamState.UP for w in self.watches)
        self._notifier.ready(f"watching {up}/{len(self.watches)} servers")
        interval = self._notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            await anyio.sleep(interval / 2)
            # Ping only while the timer loop still turns: a wedged daemon gets restarted.
            if time.monotonic() - self.timers.last_turn < max(interval, 2 * MAX_TIMER_SLEEP):
                self._notifier.watchdog_ping()


def page_url(config: Config, port: int) -> str:
    """Where a browser on this machine finds the status page (a wildcard listen is loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104 - compared
        config.listen_host, config.listen_host
    )
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.web is not None and config.web.tls else "http"
    return f"{scheme}://{host}:{port}/"


def _recorder(config: Config) -> Recorder | None:
    """The `--record` file, opened now so a bad path is a start-up error, not a silent loss."""
    if config.record is None:
        return None
    recorder = Recorder(Path(config.record), text=config.record_text)
    try:
        recorder.open()
    except OSError as exc:
        raise ConfigError(
            "--record", f"cannot write {config.record}: {exc.strerror or exc}"
        ) from None
    return recorder


_LOG_SINK = LogSink()
