"""Follows one server's event stream: reconnects, feeds each line to its core, hands on transitions."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from watchdog.app.views import SESSIONS_LISTED, sessions_doc
from watchdog.core.clock import iso
from watchdog.core.events import Event, Ignored, Malformed, StreamConnected
from watchdog.core.server import ServerCore
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Transition
from watchdog.io.backoff import Backoff
from watchdog.io.probe import ProbeSessions, find_probe_sessions
from watchdog.io.reconcile import MAX_DIRECTORIES, ReadFailure, Reconciled, read_state
from watchdog.io.record import Recorder
from watchdog.io.source import (
    AuthError,
    EventSource,
    ServerApi,
    SilentError,
    StreamError,
    StreamPath,
)
from watchdog.io.sse import Oversized
from watchdog.io.v2 import detect_api, read_snapshots_v2
from watchdog.opencode.v1 import V1Stream
from watchdog.opencode.v2 import V2Stream
from watchdog.sinks.metrics import Metrics, ServerSnapshot

log = structlog.get_logger("watchdog.stream")

# The longest wait between two attempts to open a stream that keeps failing (from 1 s, doubling).
RETRY_CAP = 60.0
# A stream that stayed up this long counts as healthy: the next failure starts backoff afresh.
HEALTHY_AFTER = 60.0
# Wrong credentials will not fix themselves in a second; don't hammer the server's auth.
AUTH_RETRY_FLOOR = 30.0
# `/status` lists this many pending prompts per server, oldest first, and gives the total.
STATUS_PENDING_LIMIT = 500
# OpenCode 1.18.33 lost all first events of a session created 0.15 s after a subscription opened
# about 1 run in 30 (0 in 30 with 2 s between them): the state is read once more this long after
# each (re)connect.
RECONCILE_FOLLOW_UP = 3.0
# A failed REST read is tried again after this long, doubling up to the cap, until it reads.
RECONCILE_RETRY = 5.0
RECONCILE_RETRY_CAP = 60.0
# OpenCode 2 sends its `: heartbeat` comment every 15 s (packages/server/src/handlers/event.ts);
# three missed in a row make a dead stream.
V2_HEARTBEAT = 15.0
V2_MISSED_HEARTBEATS = 3


def v2_window(liveness: float, heartbeat: float | None = None) -> float:
    """An OpenCode 2 stream's liveness window: quiet between its heartbeat comments, so three of
    them at least, however short the liveness timeout."""
    beat = V2_HEARTBEAT if heartbeat is None else heartbeat
    return max(liveness, V2_MISSED_HEARTBEATS * beat)


class StreamState(enum.StrEnum):
    """Where a server's stream stands."""

    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    AUTH_FAILED = "auth_failed"


@dataclass(slots=True)
class StreamStatus:
    """Mutable facts about one stream, read by `/healthz`, `/status` and the gauges."""

    state: StreamState = StreamState.CONNECTING
    path: str | None = None
    since: float | None = None
    last_event_at: float | None = None  # wall, for people
    last_event_mono: float | None = None  # monotonic, for the liveness check
    last_error: str | None = None
    reconnects: int = 0


class ServerWatch:
    """One watched server: its tracker and the task that keeps its stream open."""

    def __init__(
        self,
        name: str,
        url: str,
        source: EventSource,
        tracker: Tracker,
        *,
        api: ServerApi | None = None,
        metrics: Metrics,
        dispatch: Callable[[list[Transition]], None],
        reschedule: Callable[[], None] = lambda: None,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        liveness: float | None = None,
        probe_sessions: ProbeSessions | None = None,
        recorder: Recorder | None = None,
        api_mode: str = "auto",
        v2_heartbeat: float | None = None,
    ) -> None:
        self.name = name
        # "auto" asks the server at every connect; "v1"/"v2" say which API it speaks.
        self.api_mode = api_mode
        self.api_in_use: str | None = None if api_mode == "auto" else api_mode
        self.server_version: str | None = None  # what an OpenCode 2 server's /api/info says
        # Its process ids, before and at the latest connect: a new one is a server restart.
        self._pids: tuple[int | None, int | None] = (None, None)
        self.api_known = anyio.Event()  # set once ``api_in_use`` is known
        self._v2_heartbeat = V2_HEARTBEAT if v2_heartbeat is None else v2_heartbeat
        # The admission probe's own sessions: their events never reach the tracker.
        self.probe_sessions = probe_sessions if probe_sessions is not None else ProbeSessions()
        self.url = url
        self.source = source
        self.core = ServerCore(
            name,
            V1Stream(directory_scoped=source.path is StreamPath.DIRECTORY),
            tracker=tracker,
            probe_sessions=self.probe_sessions,
        )
        self.status = StreamStatus()
        self.probe_sessions.stream_up = lambda: self.status.state is StreamState.UP
        self._metrics = metrics
        self._dispatch = dispatch
        self._reschedule = reschedule
        self._clock = clock  # wall: for people
        self._monotonic = monotonic  # deadlines and waits
        self._backoff = backoff or Backoff(base=1.0, cap=RETRY_CAP)
        self._sleep = sleep
        self._liveness = liveness
        self._warned_types: set[str] = set()
        self._api = api
        self._reconcile_wanted = anyio.Event()
        self.follow_up_delay: float | None = RECONCILE_FOLLOW_UP  # None: no second read
        self.retry_delay = RECONCILE_RETRY
        self.reconciles = 0  # reconciles fed to the tracker
        self._failing_reads: set[tuple[str, str | None]] = set()
        self._connections = 0
        self._restarted = False
        self._recorder = recorder  # `run --record`

    @property
    def liveness_window(self) -> float | None:
        """How long the stream may send nothing well-formed before it counts as dead. OpenCode 2
        sends nothing but a comment every 15 s on a quiet stream: three of them at least."""
        liveness = self._liveness
        if liveness is not None and self.api_in_use == "v2":
            return v2_window(liveness, self._v2_heartbeat)
        return liveness

    @property
    def tracker(self) -> Tracker:
        """The server's tracker (kept across a reload that changes how the server is reached)."""
        return self.core.tracker

    async def follow(self) -> None:
        """Keep the stream open forever; failures are logged, counted and retried with backoff."""
        attempt = 0
        while True:
            if attempt:
                self.status.reconnects += 1
                self._metrics.stream_reconnects.labels(server=self.name).inc()
            attempt += 1
            opened_at = self._monotonic()
            self._connecting()
            try:
                await self._read()
            except AuthError as exc:
                self._down(StreamState.AUTH_FAILED, str(exc))
                delay = max(AUTH_RETRY_FLOOR, self._backoff.next_delay())
            except StreamError as exc:
                self._down(StreamState.DOWN, str(exc))
                if self._monotonic() - opened_at >= HEALTHY_AFTER:
                    self._backoff.reset()
                delay = self._backoff.next_delay()
            log.info("stream.retrying", server=self.name, retry_in=round(delay, 2))
            await self._sleep(delay)

    async def _read(self) -> None:
        """Read the stream until it fails; raises ``StreamError``.

        One clock read and at most one timer reschedule per network read. Liveness counts events
        that decode, not bytes: a server sending only garbage, a line that never ends or events
        over the size cap is as dead as a silent one. The liveness deadline moves on at most every
        tenth of the window (moving a timer costs more than reading an event), so the window is
        between the liveness timeout and a tenth more.
        """
        await self._choose_api()
        liveness = self.liveness_window
        step = min(1.0, liveness / 10) if liveness is not None else 0.0
        with anyio.CancelScope() as silence:
            moved = anyio.current_time()
            if liveness is not None:
                silence.deadline = moved + liveness
            async with self.source.connect() as batches:
                self.status.path = self.source.path.value
                if self.api_in_use != "v2":
                    self.core.wire = V1Stream(
                        directory_scoped=self.source.path is StreamPath.DIRECTORY
                    )
                async for batch in batches:
                    now, wall = self._monotonic(), self._clock()
                    earlier = alive = False
                    for data in batch:
                        if isinstance(data, Oversized):
                            self._oversized(data)
                            continue
                        earlier = self._feed(data, now, wall) or earlier
                        alive = alive or self.core.well_formed
                    self._metrics.count_events(self.name, self.core.take_counts())
                    if earlier:
                        self._reschedule()
                    if alive and liveness is not None:
                        at = anyio.current_time()
                        if at - moved >= step:
                            moved = at
                            silence.deadline = at + liveness
        if silence.cancelled_caught:
            raise SilentError(
                f"no data within the liveness window of {liveness:g} s"
                " (no well-formed event arrived)"
            )

    async def _choose_api(self) -> None:
        """Which API to follow on this connect: the configured one, or (auto) what the server's
        `GET /api/info` says; raises ``StreamError`` when the server cannot be asked."""
        api = self.api_mode
        if self._api is None:
            api = "v1" if api == "auto" else api
        elif api != "v1":
            try:
                info = await detect_api(self._api)
            except StreamError:
                if api == "auto":
                    raise
                info = None  # `api = "v2"`: the info was wanted for the pid only
            if info is not None:
                if api == "auto":
                    api = info.api
                self.server_version = info.version
                self._pids = (self._pids[1], info.pid)
        if api != self.api_in_use or not isinstance(
            self.core.wire, V2Stream if api == "v2" else V1Stream
        ):
            if self.api_in_use is not None and api != self.api_in_use:
                log.info("stream.api_changed", server=self.name, api=api)
            self.source.use_api(api)
            if api == "v2":
                self.core.wire = V2Stream()
            self.api_in_use = api
        self.api_known.set()

    def handle(self, data: str, now: float | None = None, wall: float | None = None) -> bool:
        """Feed one event to the core as if it had just arrived; True when it was well-formed."""
        earlier = self._feed(
            data,
            self._monotonic() if now is None else now,
            self._clock() if wall is None else wall,
        )
        self._metrics.count_events(self.name, self.core.take_counts())
        if earlier:
            self._reschedule()
        return self.core.well_formed

    def _feed(self, data: str, now: float, wall: float) -> bool:
        """One line through the core, its transitions handed on; says whether a deadline may have
        moved earlier."""
        self.status.last_event_at, self.status.last_event_mono = wall, now
        if self._recorder is not None:
            self._recorder.write(self.name, self.source.path.value, data, wall, now)
        core = self.core
        transitions = core.feed_line(data, now, wall)
        event = core.event
        if event is None:
            return False  # a /global/event sync duplicate
        if isinstance(event, Malformed | Ignored):
            self._count(event)
        elif isinstance(event, StreamConnected):
            self._up(wall)
            self._connections += 1
            before, now_pid = self._pids
            if self.api_in_use == "v2" and before is not None and now_pid is not None:
                self._restarted = before != now_pid  # OpenCode 2 says which process it is
            else:
                self._restarted = self._connections > 1
            self._reconcile_wanted.set()
        if core.probe_line and self.api_in_use != "v2":  # the probe speaks only 1.x
            scoped = self.source.path is StreamPath.DIRECTORY
            self.probe_sessions.publish(data, directory_scoped=scoped)
            return False
        if transitions:
            self._dispatch(transitions)
        return core.deadline_may_be_earlier

    def _oversized(self, chunk: Oversized) -> None:
        self._metrics.oversized.labels(server=self.name, what="event").inc()
        log.warning(
            "event.oversized",
            server=self.name,
            size=chunk.size,
            limit=self.source.max_event_bytes,
        )

    async def reconcile_forever(self) -> None:
        """After every (re)connect, read what the stream cannot replay and feed it to the tracker.

        Once at the connect, once more ``follow_up_delay`` later (OpenCode can lose a new
        subscription's first events), then again with a growing delay while a read fails.
        """
        if self._api is None:
            return
        while True:
            await self._reconcile_wanted.wait()
            follow_up = True
            retry_delay = self.retry_delay
            while True:
                self._reconcile_wanted = anyio.Event()
                if self.status.state is not StreamState.UP:
                    # A read belongs to its connection: once the stream is down, its follow-up or
                    # retry would read a restarted server as if nothing had broken (an idle status
                    # ending a lost prompt idle_without_reply, not server_restart). The next
                    # connect reads anew.
                    break
                failed = await self._reconcile_once()
                if follow_up and self.follow_up_delay is not None:
                    delay, follow_up = self.follow_up_delay, False
                elif failed:
                    delay = retry_delay
                    retry_delay = min(RECONCILE_RETRY_CAP, retry_delay * 2)
                else:
                    break
                with anyio.move_on_after(delay):
                    await self._reconcile_wanted.wait()
                if self._reconcile_wanted.is_set():  # a new connection: start over
                    follow_up, retry_delay = True, self.retry_delay

    async def _reconcile_once(self) -> bool:
        """One reconcile; True when a read failed that reading again may fix."""
        assert self._api is not None
        taken_at = self._monotonic()
        try:
            if self.api_in_use == "v2":
                state = Reconciled(
                    await read_snapshots_v2(
                        self._api,
                        tracked=self.tracker.pending_sessions(),
                        taken_at=taken_at,
                        restarted=self._restarted,
                    )
                )
            else:
                # After a restart the probe's sessions are known again by their title, before
                # any snapshot of them could reach the tracker.
                await find_probe_sessions(
                    self._api,
                    [None, *self.tracker.directories()][:MAX_DIRECTORIES],
                    self.probe_sessions,
                )
                state = await read_state(
                    self._api,
                    known_directories=self.tracker.directories(),
                    tracked=self.tracker.pending_sessions(),
                    taken_at=taken_at,
                    restarted=self._restarted,
                )
        except StreamError as exc:
            log.warning("reconcile.failed", server=self.name, error=str(exc))
            return not isinstance(exc, AuthError)  # the stream's own retry deals with auth
        self._note_failures(state.failures)
        snapshots = state.snapshots
        before = self.tracker.pending_count
        now, wall = self._monotonic(), self._clock()
        if self._recorder is not None:
            self._recorder.write_snapshots(self.name, snapshots, wall, now)
        self._dispatch(self.core.feed_snapshots(snapshots, now, wall))
        self._reschedule()
        self.reconciles += 1
        log.info(
            "reconcile.done",
            server=self.name,
            sessions=len(snapshots),
            unknown=len(state.failures),
            pending_before=before,
            pending_after=self.tracker.pending_count,
            seconds=round(self._monotonic() - taken_at, 3),
        )
        return any(f.retried for f in state.failures)

    def _note_failures(self, failures: list[ReadFailure]) -> None:
        """Count every failed read; log each the first time it fails, and when it reads again."""
        failing: dict[tuple[str, str | None], ReadFailure] = {}
        for failure in failures:
            self._metrics.reconcile_failures.labels(server=self.name, what=failure.what).inc()
            failing.setdefault((failure.what, failure.where), failure)
        for key, failure in failing.items():
            if key not in self._failing_reads:
                log.warning(
                    "reconcile.read_failed",
                    server=self.name,
                    what=failure.what,
                    where=failure.where,
                    error=failure.error,
                    consequence="unknown to the tracker, which changes nothing it cannot know",
                    retried=failure.retried,
                )
        for what, where in self._failing_reads - failing.keys():
            log.info("reconcile.read_recovered", server=self.name, what=what, where=where)
        self._failing_reads = set(failing)

    def snapshot(self) -> ServerSnapshot:
        """What the scrape-time gauges show for this server."""
        summary = self.tracker.summary(self._monotonic())
        return ServerSnapshot(
            name=self.name,
            pending=summary.counts,
            oldest_pending_age=summary.oldest_age,
            stream_up=self.status.state is StreamState.UP,
            last_event_at=self.status.last_event_at,
            evicted_sessions=self.tracker.evicted_sessions,
            evicted_prompts=self.tracker.evicted_prompts,
            unusable_times=self.tracker.unusable_times,
            api=self.api_in_use,
        )

    def describe(self) -> dict[str, Any]:
        """The `/status` view of this server (ids and states only)."""
        now, wall = self._monotonic(), self._clock()
        return {
            "server": self.name,
            "url": self.url,
            "api": self.api_in_use,
            "api_mode": self.api_mode,
            "server_version": self.server_version,
            "stream": {
                "state": self.status.state.value,
                "path": self.status.path,
                "since": _iso(self.status.since),
                "last_event_at": _iso(self.status.last_event_at),
                "last_error": self.status.last_error,
                "reconnects": self.status.reconnects,
            },
            # The oldest prompts only: a listing of thousands would hold the event loop.
            "pending_total": self.tracker.pending_count,
            "pending_listed_max": STATUS_PENDING_LIMIT,
            "pending": [
                {
                    "server": self.name,
                    "session_id": p.ref.session_id,
                    "message_id": p.ref.message_id,
                    "directory": p.ref.directory,
                    "state": p.state.value,
                    "age_seconds": round(p.age, 3),
                    "accepted_at": iso(p.ref.accepted_at),
                }
                for p in self.tracker.pending(now, limit=STATUS_PENDING_LIMIT)
            ],
            # Every session seen recently (idle and finished ones too), most recent first.
            "sessions_listed_max": SESSIONS_LISTED,
            "sessions": sessions_doc(self.tracker.sessions(now, wall, limit=SESSIONS_LISTED), wall),
        }

    def _count(self, event: Event) -> None:
        match event:
            case Malformed(type=etype, reason=reason):
                self._metrics.malformed_events.labels(server=self.name).inc()
                log.warning("event.malformed", server=self.name, type=etype, reason=reason)
            case Ignored(type=etype, known=False):
                if etype not in self._warned_types and len(self._warned_types) < 100:
                    self._warned_types.add(etype)
                    log.info("event.unknown_type", server=self.name, type=etype)
            case _:
                pass

    def _connecting(self) -> None:
        # /status and /healthz say "connecting" while an attempt is under way; the last error
        # stays in /status for whoever wonders why the previous attempt failed.
        self.status.state = StreamState.CONNECTING

    def _up(self, now: float) -> None:
        if self.status.state is not StreamState.UP:
            log.info("stream.up", server=self.name, path=self.source.path.value)
        self.status.state = StreamState.UP
        self.status.since = now
        self.status.last_error = None

    def _down(self, state: StreamState, error: str) -> None:
        level = "error" if state is StreamState.AUTH_FAILED else "warning"
        getattr(log, level)("stream.down", server=self.name, error=error)
        self.status.state = state
        self.status.since = self._clock()
        self.status.last_error = error


def _iso(ts: float | None) -> str | None:
    return iso(ts) if ts is not None else None
