"""One watched server's whole pure core: a line in, transitions out, the same live and in replay.

It owns decoding a stream line (through the server's wire format), the probe filter (the
admission probe's own sessions never reach the tracker), clock sampling (server timestamps on
connect and heartbeat), the snapshot merge and the tracker. The daemon's watch feeds it what the
network gives; `replay` feeds it what a recording holds; tests feed it lists. None of it does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from watchdog.core.events import Event, Malformed, SessionSeen, SessionSnapshot
from watchdog.core.settings import Limits, Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Transition


@dataclass(frozen=True, slots=True)
class Line:
    """One decoded stream line: its wire type, the event, and the server's time of sending when
    the line carries one cheaply (a connect or heartbeat: the clock samples)."""

    type: str
    event: Event
    sent_at: float | None = None


class WireFormat(Protocol):
    """Decodes one stream's lines into the core's events: one implementation per wire format."""

    @property
    def api(self) -> str:
        """The API generation it speaks ("v1", "v2"), for `/status` and the metrics."""
        ...

    def decode(self, data: str, wall: float) -> Line | None:
        """One SSE ``data`` field; None for a line that repeats another (never raises).

        ``wall`` is our wall clock, for ids that encode a time modulo some period.
        """
        ...


class SessionSet(Protocol):
    """The admission probe's sessions: kept out of tracking."""

    def __contains__(self, session_id: object) -> bool: ...

    def add(self, session_id: str) -> None:
        """Mark a session as the probe's."""
        ...


class ServerCore:
    """The pure core of one server: decode, filter, sample the clock, track.

    After each ``feed_line`` the attributes ``event`` (None for a repeated line), ``probe_line``
    (the line was about a probe session and went no further) and ``deadline_may_be_earlier`` say
    what the line was; ``counts`` accumulates event types until the caller takes them.
    """

    def __init__(
        self,
        server: str,
        wire: WireFormat,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        *,
        probe_sessions: SessionSet | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.server = server
        self.wire = wire
        self.tracker = tracker or Tracker(server, timeouts, limits)
        self.probe_sessions: SessionSet = probe_sessions if probe_sessions is not None else set()
        self.counts: dict[str, int] = {}
        self.event: Event | None = None
        self.probe_line = False
        self.deadline_may_be_earlier = False

    def feed_line(self, data: str, now: float, wall: float) -> list[Transition]:
        """Decode one stream line and feed it on; ``now`` is monotonic, ``wall`` for people."""
        line = self.wire.decode(data, wall)
        self.probe_line = self.deadline_may_be_earlier = False
        if line is None:
            self.event = None
            return []
        counts = self.counts
        counts[line.type] = counts.get(line.type, 0) + 1
        event = self.event = line.event
        if line.sent_at is not None:
            self.tracker.observe_clock(line.sent_at, now, wall)
        if self._is_probe(event):
            self.probe_line = True
            return []
        out = self.tracker.feed(event, now, wall)
        self.deadline_may_be_earlier = self.tracker.deadline_may_be_earlier
        return out

    def feed(self, event: Event, now: float, wall: float) -> list[Transition]:
        """Feed an event already decoded (a snapshot from a REST read, say)."""
        if self._is_probe(event):
            return []
        out = self.tracker.feed(event, now, wall)
        self.deadline_may_be_earlier = self.tracker.deadline_may_be_earlier
        return out

    def feed_snapshots(
        self, snapshots: list[SessionSnapshot], now: float, wall: float
    ) -> list[Transition]:
        """A reconnect's REST reads, in order; the probe's sessions are skipped."""
        return [t for snapshot in snapshots for t in self.feed(snapshot, now, wall)]

    def tick(self, now: float, wall: float) -> list[Transition]:
        """Fire what has come due."""
        return self.tracker.tick(now, wall)

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do next (monotonic)."""
        return self.tracker.next_deadline()

    def take_counts(self) -> dict[str, int]:
        """The event types counted since the last call."""
        counts, self.counts = self.counts, {}
        return counts

    @property
    def well_formed(self) -> bool:
        """Whether the last line decoded (liveness counts only those)."""
        return not isinstance(self.event, Malformed)

    def _is_probe(self, event: Event) -> bool:
        """Whether ``event`` concerns one of the admission probe's sessions (marked on sight)."""
        if isinstance(event, SessionSeen) and event.probe:
            self.probe_sessions.add(event.session_id)
        session_id = getattr(event, "session_id", None)
        return session_id is not None and session_id in self.probe_sessions
