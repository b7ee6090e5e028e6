"""Wires the pieces into the long-running service: one task per stream, one for timers, one for HTTP."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry

from watchdog import __version__
from watchdog.config import Config, ConfigError, ServerConfig
from watchdog.endpoint import Endpoint, Health, bound_port
from watchdog.metrics import Metrics
from watchdog.outbox import Outbox
from watchdog.page import PageView, ServerView
from watchdog.page import render as render_page
from watchdog.recent import RecentIncidents
from watchdog.record import Recorder
from watchdog.sdnotify import Notifier
from watchdog.sinks import Sink
from watchdog.sinks.alertmanager import AlertmanagerSink
from watchdog.sinks.log import LogSink
from watchdog.sinks.webhook import WebhookSink
from watchdog.source import EventSource, ServerApi
from watchdog.tracker import Tracker
from watchdog.transitions import Transition
from watchdog.watch import ServerWatch, StreamState

log = structlog.get_logger("watchdog.daemon")

# The timer loop wakes at least this often, so the systemd watchdog ping proves it still turns.
MAX_TIMER_SLEEP = 5.0
READY_WAIT = 10.0  # report READY even if a server is down: the daemon itself is up
SHUTDOWN_GRACE = 0.5  # pending alert deliveries get this long on SIGTERM
DELIVERY_RESULTS = ("delivered", "retried", "failed", "dropped")
# OpenCode sends a heartbeat every 10 s: a shorter liveness window reopens healthy streams.
HEARTBEAT_INTERVAL = 10.0
# Every request (stream, REST, webhook, Alertmanager) names us, so server and proxy logs can tell.
USER_AGENT = f"opencode-watchdog/{__version__}"


class Timers:
    """Calls every tracker's ``tick`` at its next deadline; no polling loop spins."""

    def __init__(
        self,
        watches: Sequence[ServerWatch],
        dispatch: Callable[[list[Transition]], None],
        clock: Callable[[], float],
    ) -> None:
        self._watches = watches
        self._dispatch = dispatch
        self._clock = clock
        self._wake = anyio.Event()
        self._scheduled = math.inf
        self.last_turn = time.monotonic()

    def poke(self) -> None:
        """A deadline may have moved earlier; recompute."""
        deadline = min(
            (d for w in self._watches if (d := w.tracker.next_deadline()) is not None),
            default=math.inf,
        )
        if deadline < self._scheduled:
            self._wake.set()

    async def run(self) -> None:
        """Tick, sleep until the earliest deadline (or a poke), repeat."""
        while True:
            self.last_turn = time.monotonic()
            now = self._clock()
            for watch in self._watches:
                self._dispatch(watch.tracker.tick(now))
            self._scheduled = min(
                (d for w in self._watches if (d := w.tracker.next_deadline()) is not None),
                default=math.inf,
            )
            delay = min(MAX_TIMER_SLEEP, max(0.0, self._scheduled - self._clock()))
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


class Daemon:
    """The service: build it from a Config, then ``await run()`` until cancelled or signalled.

    Build it inside the event loop: it creates cancel scopes for its streams and sinks.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        notifier: Notifier | None = None,
        reload: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry, lambda: [w.snapshot(clock()) for w in self.watches])
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
        self.recorder = _recorder(config)
        self._followers: dict[str, _Follower] = {}
        self.watches: list[ServerWatch] = [
            self._watch(server, config.liveness_timeout, Tracker(server.name, config.timeouts))
            for server in config.servers
        ]
        self.alerting = self._alerting(config)
        self.timers = Timers(self.watches, self.dispatch, clock)
        # Issue 11's probes: set this to a callable returning one mapping per probe result and
        # the status page shows them; None leaves the page's probe section out.
        self.page_probes: Callable[[], Sequence[Mapping[str, object]]] | None = None
        self.endpoint = Endpoint(self.registry, self.health, self.status, page=self.page)

    @property
    def sinks(self) -> list[Sink]:
        """Every sink, in delivery order."""
        return [self.metrics, _LOG_SINK, self.recent, *self.alerting.sinks]

    def _watch(self, server: ServerConfig, liveness: float, tracker: Tracker) -> ServerWatch:
        auth = httpx.BasicAuth(server.username, server.password) if server.password else None
        # The read timeout is the liveness window: OpenCode sends a heartbeat every 10 s, so a
        # stream (or a server still booting) that sends nothing for longer is dead.
        client = httpx.AsyncClient(
            transport=self._transport,
            auth=auth,
            timeout=httpx.Timeout(10.0, read=liveness),
            headers={"user-agent": USER_AGENT},
        )
        self._followers[server.name] = _Follower(server, liveness, client)
        self.metrics.register_server(server.name)
        return ServerWatch(
            server.name,
            server.url,
            EventSource(client, server.url),
            tracker,
            api=ServerApi(client, server.url),
            metrics=self.metrics,
            dispatch=self.dispatch,
            reschedule=self.timers_poke,
            clock=self.clock,
            record=self._record_for(server.name),
        )

    def _record_for(self, server: str) -> Callable[[str, str, float], None] | None:
        recorder = self.recorder
        if recorder is None:
            return None
        return lambda stream, data, at: recorder.write(server, stream, data, at)

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

    def timers_poke(self) -> None:
        """A deadline may have moved earlier (new prompt, unblock, finished tool, reload)."""
        self.timers.poke()

    def health(self) -> Health:
        """Healthy when every stream is up and has sent something within the liveness window."""
        now = self.clock()
        servers: dict[str, Any] = {}
        ok = True
        for w in self.watches:
            fresh = (
                w.status.last_event_at is not None
                and now - w.status.last_event_at <= self.config.liveness_timeout
            )
            live = w.status.state is StreamState.UP and fresh
            ok = ok and live
            servers[w.name] = {"state": w.status.state.value, "live": live}
            if not live:
                servers[w.name]["reason"] = w.status.last_error or (
                    "no event within the liveness window"
                    if w.status.state is StreamState.UP
                    else "not connected yet"
                )
        return Health(ok=ok, detail={"servers": servers})

    def status(self) -> dict[str, Any]:
        """The `/status` document."""
        now = self.clock()
        return {
            "version": __version__,
            "now": now,
            "servers": [w.describe(now) for w in self.watches],
        }

    def page(self) -> bytes:
        """The HTML status page at `/`."""
        now = self.clock()
        servers = [
            ServerView(
                name=w.name,
                url=w.url,
                state=w.status.state.value,
                since=w.status.since,
                last_event_at=w.status.last_event_at,
                last_error=w.status.last_error,
                reconnects=w.status.reconnects,
                pending=w.tracker.pending(now),
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
                    servers=[w.name for w in self.watches],
                    first_response_timeout=self.config.timeouts.first_response,
                    inactivity_timeout=self.config.timeouts.inactivity,
                    tool_timeout=self.config.timeouts.tool,
                )
                if self.config.liveness_timeout <= HEARTBEAT_INTERVAL:
                    log.warning(
                        "config.liveness_too_short",
                        liveness_timeout=self.config.liveness_timeout,
                        reason="OpenCode sends a heartbeat every 10 s; streams will be reopened",
                    )
                tg.start_soon(self._deliver, self.alerting)
                for watch in self.watches:
                    tg.start_soon(self._follow, watch, self._followers[watch.name])
                tg.start_soon(self.timers.run)
                tg.start_soon(self._signals, tg.cancel_scope)
                tg.start_soon(self._systemd)
                task_status.started(port)
        finally:
            with anyio.CancelScope(shield=True):
                self._notifier.stopping()
                for outbox in self.alerting.outboxes:
                    await outbox.drain(SHUTDOWN_GRACE)
                for follower in self._followers.values():
                    await follower.client.aclose()
                await self._sink_client.aclose()
                if self.recorder is not None:
                    self.recorder.close()
                log.info("daemon.stopped")

    async def _follow(self, watch: ServerWatch, follower: _Follower) -> None:
        with follower.scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch.follow)
                tg.start_soon(watch.reconcile_forever)

    async def _deliver(self, alerting: _Alerting) -> None:
        with alerting.scope:
            async with anyio.create_task_group() as tg:
                for outbox in alerting.outboxes:
                    tg.start_soon(outbox.run)
                if alerting.alertmanager is not None:
                    tg.start_soon(alerting.alertmanager.run)

    async def _retire(self, alerting: _Alerting) -> None:
        """Stop what a reload replaced: letters already queued get the shutdown grace."""
        with anyio.CancelScope(shield=True):
            for outbox in alerting.outboxes:
                await outbox.drain(SHUTDOWN_GRACE)
        alerting.scope.cancel()

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
        try:
            fresh = self._reload()
        except ConfigError as exc:
            log.error("config.reload_failed", error=str(exc))
            return
        tg = self._tg
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
            tracker = old.tracker if old is not None else Tracker(server.name, fresh.timeouts)
            watch = self._watch(server, fresh.liveness_timeout, tracker)
            watches.append(watch)
            tg.start_soon(self._follow, watch, self._followers[server.name])
        for name, gone in kept.items():
            self._stop_follower(name, tg)
            log.warning("server.removed", server=name, pending_forgotten=gone.tracker.pending_count)
        self.watches[:] = watches
        for watch in self.watches:
            watch.tracker.set_timeouts(fresh.timeouts)
        if (fresh.webhooks, fresh.alertmanagers) != (
            self.config.webhooks,
            self.config.alertmanagers,
        ):
            retired, self.alerting = self.alerting, self._alerting(fresh)
            tg.start_soon(self._deliver, self.alerting)
            tg.start_soon(self._retire, retired)
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
            webhooks=len(fresh.webhooks),
            alertmanagers=len(fresh.alertmanagers),
        )
        self.timers.poke()

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
