"""Follows one server's event stream: reconnects, decodes, feeds its tracker, hands on transitions."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from watchdog.backoff import Backoff
from watchdog.decode_v1 import decode_typed
from watchdog.events import Event, Ignored, Malformed, StreamConnected
from watchdog.metrics import Metrics, ServerSnapshot
from watchdog.reconcile import read_snapshots
from watchdog.source import AuthError, EventSource, ServerApi, StreamError, StreamPath
from watchdog.tracker import Tracker
from watchdog.transitions import Transition

log = structlog.get_logger("watchdog.stream")

# A stream that stayed up this long counts as healthy: the next failure starts backoff afresh.
HEALTHY_AFTER = 60.0
# Wrong credentials will not fix themselves in a second; don't hammer the server's auth.
AUTH_RETRY_FLOOR = 30.0
# `/status` lists this many pending prompts per server, oldest first, and gives the total.
STATUS_PENDING_LIMIT = 500


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
    last_event_at: float | None = None
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
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.name = name
        self.url = url
        self.source = source
        self.tracker = tracker
        self.status = StreamStatus()
        self._metrics = metrics
        self._dispatch = dispatch
        self._reschedule = reschedule
        self._clock = clock
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._sleep = sleep
        self._warned_types: set[str] = set()
        self._api = api
        self._reconcile_wanted = anyio.Event()
        self._connections = 0
        self._restarted = False

    async def follow(self) -> None:
        """Keep the stream open forever; failures are logged, counted and retried with backoff."""
        attempt = 0
        while True:
            if attempt:
                self.status.reconnects += 1
                self._metrics.stream_reconnects.labels(server=self.name).inc()
            attempt += 1
            opened_at = self._clock()
            try:
                async with self.source.connect_batches() as batches:
                    self.status.path = self.source.path.value
                    async for batch in batches:
                        # One clock read and at most one timer reschedule per network read.
                        now = self._clock()
                        types: dict[str, int] = {}
                        earlier = False
                        for data in batch:
                            earlier = self._feed(data, now, types) or earlier
                        self._metrics.count_events(self.name, types)
                        if earlier:
                            self._reschedule()
            except AuthError as exc:
                self._down(StreamState.AUTH_FAILED, str(exc))
                delay = max(AUTH_RETRY_FLOOR, self._backoff.next_delay())
            except StreamError as exc:
                self._down(StreamState.DOWN, str(exc))
                if self._clock() - opened_at >= HEALTHY_AFTER:
                    self._backoff.reset()
                delay = self._backoff.next_delay()
            log.info("stream.retrying", server=self.name, retry_in=round(delay, 2))
            await self._sleep(delay)

    def handle(self, data: str, now: float) -> None:
        """Decode one event and feed it to the tracker."""
        types: dict[str, int] = {}
        earlier = self._feed(data, now, types)
        self._metrics.count_events(self.name, types)
        if earlier:
            self._reschedule()

    def _feed(self, data: str, now: float, types: dict[str, int]) -> bool:
        """``handle`` without the reschedule and with the type counted into ``types``; says
        whether a deadline may have moved earlier."""
        self.status.last_event_at = now
        decoded = decode_typed(data, directory_scoped=self.source.path is StreamPath.DIRECTORY)
        if decoded is None:
            return False  # a /global/event sync duplicate
        etype, event = decoded
        types[etype] = types.get(etype, 0) + 1
        self._count(event)
        if isinstance(event, StreamConnected):
            self._up(now)
            self._connections += 1
            self._restarted = self._connections > 1
            self._reconcile_wanted.set()
        if transitions := self.tracker.feed(event, now):
            self._dispatch(transitions)
        return self.tracker.deadline_may_be_earlier

    async def reconcile_forever(self) -> None:
        """After every (re)connect, read what the stream cannot replay and feed it to the tracker."""
        if self._api is None:
            return
        while True:
            await self._reconcile_wanted.wait()
            self._reconcile_wanted = anyio.Event()
            taken_at = self._clock()
            try:
                snapshots = await read_snapshots(
                    self._api,
                    known_directories=self.tracker.directories(),
                    tracked=self.tracker.pending_sessions(),
                    taken_at=taken_at,
                    restarted=self._restarted,
                )
            except StreamError as exc:
                log.warning("reconcile.failed", server=self.name, error=str(exc))
                continue
            before = self.tracker.pending_count
            for snapshot in snapshots:
                self._dispatch(self.tracker.feed(snapshot, self._clock()))
            self._reschedule()
            log.info(
                "reconcile.done",
                server=self.name,
                sessions=len(snapshots),
                pending_before=before,
                pending_after=self.tracker.pending_count,
                seconds=round(self._clock() - taken_at, 3),
            )

    def snapshot(self, now: float) -> ServerSnapshot:
        """What the scrape-time gauges show for this server."""
        summary = self.tracker.summary(now)
        return ServerSnapshot(
            name=self.name,
            pending=summary.counts,
            oldest_pending_age=summary.oldest_age,
            stream_up=self.status.state is StreamState.UP,
            last_event_at=self.status.last_event_at,
            evicted_sessions=self.tracker.evicted_sessions,
            evicted_prompts=self.tracker.evicted_prompts,
        )

    def describe(self, now: float) -> dict[str, Any]:
        """The `/status` view of this server (ids and states only)."""
        return {
            "server": self.name,
            "url": self.url,
            "stream": {
                "state": self.status.state.value,
                "path": self.status.path,
                "since": self.status.since,
                "last_event_at": self.status.last_event_at,
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
                }
                for p in self.tracker.pending(now, limit=STATUS_PENDING_LIMIT)
            ],
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
