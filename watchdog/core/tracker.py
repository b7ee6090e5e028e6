"""Matches accepted prompts with their replies and decides when one has stalled; pure, no I/O.

Feed it events with ``feed(event, now, wall)``, call ``tick(now, wall)`` at ``next_deadline()``;
both return the transitions that happened. ``now`` is a monotonic clock (deadlines and waits run
on it, so a step of the wall clock moves none of them); ``wall`` is wall-clock seconds since the
epoch, only for what people read (defaults to ``now``, as in tests with one fake clock).

Each pending prompt has a stored phase (``watchdog.core.phases``). OpenCode's events become
signals for the prompts they concern, and the table there says what each does::

{diagram}

A *turn* is one run of OpenCode's loop, answering the latest user message: every earlier prompt
still pending when a reply opens is folded into that turn. Each prompt of a turn keeps its own
first-response clock (started when its turn began, never before: the ``busy`` that starts it, the
end of the prompt ahead of it while the session runs on, or the reply it is folded into opening),
its own stalls and its own ending; the reply's progress (output, silence, tools) is the turn's.

Each stall kind fires at most once per prompt. ``no_response`` and ``inactive`` resolve once, when
the reply arrives or the prompt ends; ``dropped`` and ``failed`` are final. A ``session.error`` with
nothing pending is a prompt that failed before OpenCode stored it: it is born ended (accepted,
one ``failed`` stall, completed).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from watchdog.core.clock import ServerClock
from watchdog.core.deadlines import Deadlines
from watchdog.core.events import (
    Event,
    Heartbeat,
    HumanAnswered,
    HumanAsked,
    Ignored,
    Malformed,
    Origin,
    PartKind,
    PromptAdmitted,
    PromptSnapshot,
    ReplyActivity,
    ReplyFinished,
    ReplyOpened,
    ReplySnapshot,
    SessionDeleted,
    SessionFailed,
    SessionRun,
    SessionSeen,
    SessionSnapshot,
    StatusChanged,
    StreamConnected,
    ToolProgress,
)
from watchdog.core.phases import Action, Phase, Signal, diagram, rule
from watchdog.core.settings import Limits, Timeouts
from watchdog.core.transitions import (
    Accepted,
    Completed,
    ErrorInfo,
    FirstResponse,
    Outcome,
    PromptRef,
    PromptState,
    Resolved,
    Retry,
    Stalled,
    StallKind,
    Transition,
    Usage,
)

__doc__ = (__doc__ or "").replace("{diagram}", diagram())

ABORTED_ERROR = "MessageAbortedError"
INTERMEDIATE_FINISH = "tool-calls"
FAILED_FINISHES = frozenset({"error"})
# How many ended prompts a session remembers, to tell OpenCode's re-sends of a stored
# user message from a repeated messageID (which re-admits it with a new time.created).
REMEMBERED_PER_SESSION = 16
MAX_LINEAGE = 8  # sub-agents nest; a cycle in bad data must not loop forever
# OpenCode publishes one failure as two `session.error` events (the request handler's and the
# loop's), milliseconds apart; a second one this soon after a failure is the same failure.
ERROR_ECHO_SECONDS = 2.0
# A live prompt whose corrected time is this far before its arrival means a server clock we
# cannot use (or a jump): we time that prompt from its arrival instead.
MAX_ARRIVAL_DELAY = 60.0
# A real prompt stored in an idle session turns it busy within milliseconds (1.2 s on a cold
# server); an earlier message still without a turn when the next one arrives this much later was
# sent with `noReply`. Closer together they may be one request of two prompts, so they fold.
NO_TURN_GAP = 1.0
# Deleted sessions are remembered (by id, this many) so that late or repeated events for one
# do not bring it back.
REMEMBERED_DELETED = 1024
HISTORY_PER_SESSION = 16  # state changes a session remembers for `/status` and the page
FINAL_KINDS = frozenset({StallKind.DROPPED, StallKind.FAILED})
STARTED = frozenset(
    {Phase.WAITING, Phase.RETRYING, Phase.REPLYING, Phase.BLOCKED, Phase.BLOCKED_REPLYING}
)
BLOCKED = frozenset({Phase.BLOCKED, Phase.BLOCKED_REPLYING})
# The pending gauge's `state` label: the phase, both waits for a person as one.
PHASE_STATE = {
    phase: PromptState.BLOCKED if phase in BLOCKED else PromptState(phase.value) for phase in Phase
}
_NO_PHASES = dict.fromkeys(Phase, 0)  # copied for each session: iterating an enum is slow
_LATER_ONLY = (ReplyActivity, Heartbeat, StreamConnected, Ignored, Malformed, SessionSeen)


class SessionState(enum.StrEnum):
    """What a session is doing, in the words of the page and `/status`."""

    IDLE = "idle"
    WORKING = "working"
    WAITING_FOR_PERSON = "waiting for a person"
    RETRYING = "retrying"
    STALLED = "stalled"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PendingPrompt:
    """A read-only view of one pending prompt, for `/status`."""

    ref: PromptRef
    state: PromptState
    age: float


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """Pending prompts by state and the oldest one's age, for the gauges and `/status`."""

    counts: dict[PromptState, int]
    oldest_age: float

    @property
    def total(self) -> int:
        """Every pending prompt."""
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class StateChange:
    """A session entered ``state`` at ``since`` (wall seconds)."""

    state: SessionState
    since: float


@dataclass(frozen=True, slots=True)
class SessionView:
    """A read-only view of one session, for `/status` and the page (ids and states, never text).

    ``history`` is oldest first and ends with the current state.
    """

    session_id: str
    parent_session_id: str | None
    directory: str | None
    state: SessionState
    last_activity: float  # wall seconds
    pending: int
    retry: Retry | None
    last_outcome: Outcome | None
    last_outcome_at: float | None
    history: tuple[StateChange, ...]


@dataclass(slots=True, eq=False)  # identity matters: two prompts may look alike
class _Prompt:
    id: str  # the user message id
    ref: PromptRef
    created_at: float | None  # the server's time.created, to recognise re-sends
    accepted: float  # monotonic
    phase: Phase
    clock_start: float | None = None  # monotonic: when its turn began
    stall: StallKind | None = None  # the stall firing now, if any
    fired: set[StallKind] = field(default_factory=set)
    turn: _Turn | None = None
    live: bool = True  # False once it ended or was let go
    last_reply: str | None = None  # the newest reply that named it as its parent


@dataclass(slots=True, eq=False)
class _Turn:
    """One run of OpenCode's loop: the replies answering its latest prompt, and the prompts it
    answers (``members``, oldest first; the last is the one the replies name as parent)."""

    session: _Session
    members: list[_Prompt]
    parent: _Prompt | None = None  # the prompt its latest reply names as parent
    replies: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)  # replies that completed (repeats are ignored)
    responded: float | None = None  # monotonic: the first output
    last_activity: float = 0.0  # monotonic
    running_tools: set[str] = field(default_factory=set)
    rejected: bool = False  # a person said no to a permission or question of this turn
    open_stalls: int = 0  # members with a firing stall: activity resolves them

    @property
    def owner(self) -> _Prompt:
        """The prompt its replies answer (the others are folded into it)."""
        return self.parent if self.parent in self.members else self.members[-1]


@dataclass(slots=True, eq=False)
class _Session:
    id: str
    parent_id: str | None = None
    directory: str | None = None
    run: SessionRun | None = None
    retry: Retry | None = None
    asked: set[str] = field(default_factory=set)  # request ids asked in this session itself
    waiting: set[str] = field(default_factory=set)  # ... and in its sub-agents: what it waits on
    blocked_since: float | None = None
    prompts: list[_Prompt] = field(default_factory=list)  # pending, in order of acceptance
    by_id: dict[str, _Prompt] = field(default_factory=dict)  # the same, by message id
    in_phase: dict[Phase, int] = field(default_factory=_NO_PHASES.copy)
    turn: _Turn | None = None  # the running turn
    # (message id, time.created) of prompts that ended: a stream that repeats an old admission
    # must not make a new prompt of it, while a repeated messageID (a new time) still does. Each
    # keeps the newest reply that named it: when the messageID is repeated, that reply and every
    # older one are the first sending's, never an answer to the repeat (duplicate-message-id).
    ended: OrderedDict[tuple[str, float | None], str | None] | None = None  # made when one ends
    # The newest server time of a prompt that ended here: a REST read's older user messages are
    # history (OpenCode answers the latest), never prompts to track again once forgotten.
    ended_before: float = -math.inf
    failed_at: float | None = None  # when a session.error last ended a prompt here
    stream_at: float = -math.inf  # monotonic: its latest stream event (older snapshots lose)
    seen_at: float = 0.0  # monotonic, any event
    stalled: int = 0  # pending prompts with a firing stall
    last_outcome: Outcome | None = None
    last_outcome_at: float | None = None  # monotonic
    history: deque[tuple[SessionState, float]] | None = None  # made at its first change
    # The provider and model its latest reply named: a prompt that fails before OpenCode stores
    # it (an unknown agent) says nothing of its own, and this is the best there is.
    provider: str | None = None
    model: str | None = None


class Tracker:
    """The prompt/reply state machine for one OpenCode server."""

    def __init__(
        self,
        server: str,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        clock: ServerClock | None = None,
    ) -> None:
        self.server = server
        self.timeouts = timeouts or Timeouts()
        self.limits = limits or Limits()
        self.clock = clock or ServerClock()
        self.evicted_sessions = 0
        self.evicted_prompts = 0
        self.unusable_times = 0  # prompts whose server time was no usable time
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._reply_turn: dict[str, _Turn] = {}  # assistant message id -> the turn it answers
        self._asked_in: dict[str, str] = {}  # request id -> the session that asked it
        self._pending = 0
        self._counts = dict.fromkeys(PromptState, 0)
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self.deadline_may_be_earlier = False
        # Each pending prompt's deadline, or an earlier time (re-checked when it comes due), and
        # the sessions whose deadlines may have moved earlier since: see _refresh_deadlines.
        self._deadlines: Deadlines[_Prompt] = Deadlines()
        self._touched: set[str] = set()
        self._by_age: Deadlines[_Prompt] = Deadlines()  # pending prompts by acceptance
        # Sessions without prompts by when they were last looked up (the order of _sessions), so
        # the session limit finds the least recently active idle one without a scan.
        self._stamps = itertools.count()
        self._last_seen: dict[str, int] = {}
        self._idle: Deadlines[str] = Deadlines()
        # The instant being handled (monotonic, wall) and what it produced, for the helpers.
        self._now = 0.0
        self._wall = 0.0
        self._out: list[Transition] = []

    # -- queries ------------------------------------------------------------------------------

    def directories(self) -> list[str]:
        """Project directories seen on this server (bounded by the session limit)."""
        return sorted({s.directory for s in self._sessions.values() if s.directory})

    def pending_sessions(self) -> dict[str, str | None]:
        """Sessions with pending prompts and their directory: what a reconnect must re-read."""
        return {s.id: s.directory for s in self._sessions.values() if s.prompts}

    @property
    def pending_count(self) -> int:
        """Prompts accepted and not yet ended (folded prompts included)."""
        return self._pending

    def pending(self, now: float, limit: int | None = None) -> list[PendingPrompt]:
        """Every pending prompt (or the ``limit`` oldest) with its state and age, oldest first."""
        every = (p for session in self._sessions.values() for p in session.prompts)
        chosen = (
            sorted(every, key=_by_acceptance)
            if limit is None
            else heapq.nsmallest(limit, every, key=_by_acceptance)
        )
        return [
            PendingPrompt(ref=p.ref, state=_state(p), age=max(0.0, now - p.accepted))
            for p in chosen
        ]

    def summary(self, now: float) -> PendingSummary:
        """How many prompts are pending in each state, and the oldest one's age (kept as they
        change, so a scrape costs nothing per prompt)."""
        oldest = self._by_age.peek()
        age = 0.0 if oldest is None else max(0.0, now - oldest[0])
        return PendingSummary(counts=dict(self._counts), oldest_age=age)

    def sessions(self, now: float, wall: float | None = None, limit: int = 50) -> list[SessionView]:
        """The ``limit`` most recently active sessions, most recent first."""
        wall = now if wall is None else wall
        views: list[SessionView] = []
        for session in reversed(self._sessions.values()):
            if len(views) >= limit:
                break
            views.append(
                SessionView(
                    session_id=session.id,
                    parent_session_id=session.parent_id,
                    directory=session.directory,
                    state=self._session_state(session),
                    last_activity=wall - (now - session.seen_at),
                    pending=len(session.prompts),
                    retry=session.retry,
                    last_outcome=session.last_outcome,
                    last_outcome_at=(
                        None
                        if session.last_outcome_at is None
                        else wall - (now - session.last_outcome_at)
                    ),
                    history=tuple(
                        StateChange(state, wall - (now - since))
                        for state, since in session.history or ()
                    ),
                )
            )
        return views

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to check next (monotonic), or None when no timer runs."""
        self._refresh_deadlines()
        while (top := self._deadlines.peek()) is not None:
            at, prompt = top
            actual = self._deadline(prompt) if self._is_pending(prompt) else None
            if actual == at:
                return at
            self._deadlines.pop()  # moved later, or no longer runs
            if actual is not None:
                self._deadlines.schedule(prompt, actual)
        return None

    # -- inputs -------------------------------------------------------------------------------

    @property
    def clock_offset(self) -> float | None:
        """Our monotonic clock minus the server's, plus the fastest delivery; None before a sample."""
        return self.clock.offset

    def observe_clock(self, server_time: float, now: float, wall: float | None = None) -> None:
        """Note an event the server stamped ``server_time`` and we received at ``now``."""
        self.clock.observe(server_time, now, now if wall is None else wall)

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Apply new timeouts to pending prompts too (config reload)."""
        self.timeouts = timeouts
        self._touched.update(sid for sid, s in self._sessions.items() if s.prompts)

    def set_limits(self, limits: Limits, now: float, wall: float | None = None) -> list[Transition]:
        """Apply new memory bounds (config reload) at once: past a lowered one, the oldest
        prompts and least recently active sessions go as they would on arrival, each evicted
        prompt ending with its stalls resolved."""
        self._now, self._wall = now, now if wall is None else wall
        out = self._out = []
        self.limits = limits
        self._enforce_prompt_limit(out)
        self._enforce_session_limit(keep="")
        self._after(out)
        return out

    def tick(self, now: float, wall: float | None = None) -> list[Transition]:
        """Fire what has come due."""
        self._now, self._wall = now, now if wall is None else wall
        out = self._out = []
        self._refresh_deadlines()
        due: list[_Prompt] = []
        while (top := self._deadlines.peek()) is not None and top[0] <= now:
            self._deadlines.pop()
            p = top[1]
            if not self._is_pending(p):
                continue
            deadline = self._deadline(p)
            if deadline is None:
                continue
            if now < deadline:
                self._deadlines.schedule(p, deadline)  # it moved later meanwhile
                continue
            due.append(p)
        for p in due:
            if self._is_pending(p):  # not ended by an earlier one of these
                self._signal(p, Signal.DUE, out)
                if self._is_pending(p) and (deadline := self._deadline(p)) is not None:
                    self._deadlines.schedule(p, deadline)
        self._after(out)
        return out

    def feed(self, event: Event, now: float, wall: float | None = None) -> list[Transition]:
        """Apply one event; returns what it changed."""
        self._now, self._wall = now, now if wall is None else wall
        out = self._out = []
        session_id = getattr(event, "session_id", None)
        if self._deleted and session_id in self._deleted:
            self.deadline_may_be_earlier = False
            return out
        match event:
            case ReplyActivity(message_id=mid, kind=kind):
                self._activity(event.session_id, mid, out, content=kind is PartKind.CONTENT)
            case PromptAdmitted():
                self._admit(event, out)
            case ReplyOpened():
                self._reply_opened(event, out)
            case ToolProgress(message_id=mid, call_id=call, running=running):
                if (turn := self._reply_turn.get(mid)) is not None:
                    if running:
                        turn.running_tools.add(call)
                    else:
                        turn.running_tools.discard(call)
                self._activity(event.session_id, mid, out, content=True)
            case ReplyFinished():
                self._reply_finished(event, out)
            case StatusChanged():
                self._status(event, out)
            case SessionFailed():
                self._session_failed(event, out)
            case SessionDeleted(session_id=sid):
                self._session_deleted(sid, out)
            case HumanAsked(session_id=sid, request_id=rid):
                self._asked(sid, rid, out)
            case HumanAnswered(session_id=sid, request_id=rid, rejected=rejected):
                own = self._sessions.get(sid)
                if rejected and own is not None and own.turn is not None:
                    own.turn.rejected = True
                self._release_request(rid, sid, out)
            case SessionSnapshot():
                self._reconcile(event, out)
            case SessionSeen(session_id=sid, parent_session_id=parent, directory=directory):
                session = self._session(sid)
                session.parent_id = parent if parent != sid else None
                session.directory = directory or session.directory
            case _:
                pass
        if (
            session_id is not None
            and not isinstance(event, SessionSnapshot | ReplyActivity)
            and (seen := self._sessions.get(session_id)) is not None
        ):
            seen.stream_at = seen.seen_at = now  # what the stream said of it last
        # Model output and noise only push deadlines later, unless they changed something (a
        # first response switches to the inactivity timer, which may be shorter). Callers use
        # this to skip an O(pending prompts) reschedule on every streamed delta.
        self.deadline_may_be_earlier = bool(out) or not isinstance(event, _LATER_ONLY)
        if self.deadline_may_be_earlier:
            self._touch(event, out)
        return out

    def release(
        self, now: float, wall: float | None = None, reason: str = "released"
    ) -> list[Transition]:
        """Let go of every pending prompt (its server left the configuration): each ends evicted,
        its firing stalls resolved, so that no alert is left firing for a prompt nobody watches."""
        self._now, self._wall = now, now if wall is None else wall
        out = self._out = []
        for session in list(self._sessions.values()):
            for p in list(session.prompts):
                self._signal(p, Signal.EVICTED, out, ending=Outcome.EVICTED, reason=reason)
        return out

    # -- the machine --------------------------------------------------------------------------

    def _signal(
        self,
        p: _Prompt,
        signal: Signal,
        out: list[Transition],
        *,
        ending: Outcome | None = None,
        reason: str | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        """Apply ``signal`` to ``p`` as the table says."""
        r = rule(p.phase, signal)
        if r is None:
            return  # a pair that changes nothing (phases.IGNORED says why)
        now = self._now
        session = self._sessions[p.ref.session_id]
        next_phase = r.next
        match r.action:
            case Action.START:
                p.clock_start = now
                if session.waiting:  # its turn began while a person is asked
                    next_phase = Phase.BLOCKED
            case Action.RESPOND:
                self._respond(p, out)
            case Action.RESOLVE:
                self._resolve(p, out)
            case Action.PAUSE:
                pass  # the session notes since when; the clocks move on when it is answered
            case Action.RESUME:
                # The clock stood still while a person was asked (or since it began, if later).
                if p.clock_start is not None:
                    blocked = session.blocked_since
                    since = max(p.clock_start, now if blocked is None else blocked)
                    p.clock_start += now - since
            case Action.REQUEUE:
                p.clock_start = None
                if p.turn is not None:
                    self._leave_turn(p)
            case Action.FIRE:
                assert r.stall is not None
                self._fire(session, p, r.stall, out)
            case Action.END:
                self._end(
                    session,
                    p,
                    r.ending or ending or Outcome.FAILED,
                    out,
                    reason=r.reason or reason,
                    error=error,
                )
                return
            case Action.NOTE:
                pass
        if next_phase is not None and next_phase is not p.phase:
            self._set_phase(p, next_phase)

    def _set_phase(self, p: _Prompt, phase: Phase) -> None:
        self._counts[_state(p)] -= 1
        in_phase = self._sessions[p.ref.session_id].in_phase
        in_phase[p.phase] -= 1
        in_phase[phase] += 1
        p.phase = phase
        self._counts[_state(p)] += 1

    def _set_stall(self, p: _Prompt, stall: StallKind | None) -> None:
        self._counts[_state(p)] -= 1
        session = self._sessions[p.ref.session_id]
        session.stalled += (stall is not None) - (p.stall is not None)
        if p.turn is not None:
            p.turn.open_stalls += (stall is not None) - (p.stall is not None)
        p.stall = stall
        self._counts[_state(p)] += 1

    def _respond(self, p: _Prompt, out: list[Transition]) -> None:
        now = self._now
        out.append(
            FirstResponse(
                prompt=p.ref,
                at=self._wall,
                latency=now - p.accepted,
                since_turn=now - (p.clock_start if p.clock_start is not None else p.accepted),
            )
        )
        self._resolve(p, out)

    def _fire(self, session: _Session, p: _Prompt, kind: StallKind, out: list[Transition]) -> None:
        if kind in p.fired:
            return
        p.fired.add(kind)
        if kind not in FINAL_KINDS:
            self._set_stall(p, kind)
        out.append(
            Stalled(
                prompt=p.ref,
                kind=kind,
                at=self._wall,
                waited=self._now - p.accepted,
                retry=session.retry,
                reason=None,
            )
        )

    def _resolve(self, p: _Prompt, out: list[Transition], outcome: Outcome | None = None) -> None:
        if p.stall is None:
            return
        out.append(
            Resolved(
                prompt=p.ref,
                kind=p.stall,
                at=self._wall,
                waited=self._now - p.accepted,
                outcome=outcome,
            )
        )
        self._set_stall(p, None)

    def _end(
        self,
        session: _Session,
        p: _Prompt,
        outcome: Outcome,
        out: list[Transition],
        *,
        reason: str | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        """The prompt ends: its stall resolves, a failure or a drop is reported, it is forgotten."""
        self._resolve(p, out, outcome=outcome)
        final = {Outcome.FAILED: StallKind.FAILED, Outcome.DROPPED: StallKind.DROPPED}.get(outcome)
        if final is not None and final not in p.fired:
            p.fired.add(final)
            if outcome is Outcome.FAILED:
                error = error or ErrorInfo(reason or "unknown")
            out.append(
                Stalled(
                    prompt=p.ref,
                    kind=final,
                    at=self._wall,
                    waited=self._now - p.accepted,
                    retry=session.retry,
                    reason=reason,
                    error=error if outcome is Outcome.FAILED else None,
                )
            )
        self._counts[_state(p)] -= 1
        session.in_phase[p.phase] -= 1
        session.prompts.remove(p)
        del session.by_id[p.id]
        p.live = False
        self._pending -= 1
        self._deadlines.discard(p)
        self._by_age.discard(p)
        turn = p.turn
        if turn is not None:
            self._leave_turn(p)
        out.append(
            Completed(
                prompt=p.ref,
                outcome=outcome,
                at=self._wall,
                duration=self._now - p.accepted,
                reason=reason,
            )
        )
        if session.ended is None:
            session.ended = OrderedDict()
        session.ended[(p.id, p.created_at)] = p.last_reply
        if p.created_at is not None:
            session.ended_before = max(session.ended_before, p.created_at)
        while len(session.ended) > REMEMBERED_PER_SESSION:
            session.ended.popitem(last=False)
        session.last_outcome, session.last_outcome_at = outcome, self._now
        self._note_if_idle(session)
        if not _started(session) and session.run not in (
            SessionRun.IDLE,
            None,
        ):
            # OpenCode's loop goes straight on to the latest user message: the queued prompts'
            # turn begins now (the `busy` it re-sends follows within milliseconds).
            for q in list(session.prompts):
                if q.phase is Phase.QUEUED:
                    self._signal(q, Signal.TURN, out)

    def _join(self, turn: _Turn, p: _Prompt, out: list[Transition]) -> None:
        """``p`` is answered by ``turn`` from now on (folded in, or the prompt it answers)."""
        if p.turn is turn:
            return
        if p.turn is not None:
            self._leave_turn(p)
        p.turn = turn
        turn.members.append(p)
        if p.stall is not None:
            turn.open_stalls += 1
        self._signal(p, Signal.TURN, out)
        if turn.responded is not None:
            self._signal(p, Signal.OUTPUT, out)  # the reply it joins has said something already

    def _leave_turn(self, p: _Prompt) -> None:
        turn = p.turn
        assert turn is not None
        p.turn = None
        turn.members.remove(p)
        if p.stall is not None:
            turn.open_stalls -= 1
        if not turn.members:
            for reply in turn.replies:
                if self._reply_turn.get(reply) is turn:
                    del self._reply_turn[reply]
            if turn.session.turn is turn:
                turn.session.turn = None

    # -- events -------------------------------------------------------------------------------

    def _admit(self, event: PromptAdmitted, out: list[Transition]) -> None:
        session = self._session(event.session_id)
        mid = event.message_id
        if mid in session.by_id:
            return  # re-sent, or a repeated messageID folded into the same pending prompt
        if session.ended is not None and (mid, event.created_at) in session.ended:
            return  # a re-send of a message whose reply we already saw
        accepted = self._accepted(event.created_at, event.origin)
        if session.in_phase[Phase.AWAITING_TURN]:
            for earlier in list(session.prompts):
                gap = accepted - earlier.accepted
                if earlier.phase is Phase.AWAITING_TURN and gap >= NO_TURN_GAP:
                    self._signal(earlier, Signal.LATER, out)
        if _started(session):
            phase = Phase.QUEUED  # behind the turn that runs; its own comes after
        elif session.run in (SessionRun.BUSY, SessionRun.RETRY):
            phase = Phase.WAITING  # stored into a running loop (`/shell`: busy comes first)
        else:
            phase = Phase.AWAITING_TURN
        ref = PromptRef(
            server=self.server,
            session_id=session.id,
            message_id=mid,
            accepted_at=self._wall - (self._now - accepted),
            directory=event.directory or session.directory,
            parent_session_id=session.parent_id,
            provider=event.provider,
            model=event.model,
        )
        p = _Prompt(
            id=mid,
            ref=ref,
            created_at=event.created_at,
            accepted=accepted,
            phase=phase,
            clock_start=accepted if phase is Phase.WAITING else None,
        )
        session.prompts.append(p)
        session.by_id[mid] = p
        session.in_phase[phase] += 1
        self._counts[_state(p)] += 1
        self._by_age.schedule(p, accepted)
        self._pending += 1
        out.append(Accepted(prompt=ref, at=self._wall))
        if phase is Phase.WAITING and session.retry is not None:
            self._signal(p, Signal.RETRY, out)
        if phase is Phase.WAITING and session.waiting:
            self._signal(p, Signal.ASKED, out)
        self._enforce_prompt_limit(out)

    def _accepted(self, created_at: float | None, origin: Origin) -> float:
        """When a prompt was accepted, on the monotonic clock: its `time.created` placed through
        the server clock's offset, converted once, here. Live and recovered prompts are timed
        alike; a live prompt whose server time is unusable is timed from its arrival."""
        now = self._now
        if created_at is None or not math.isfinite(created_at):
            self.unusable_times += 1
            return now
        if origin is Origin.LIVE:
            self.clock.observe(created_at, now, self._wall)
        placed = self.clock.to_monotonic(created_at)
        if placed is None:  # no sample yet: assume the clocks agree
            placed = now - (self._wall - created_at)
        if not math.isfinite(placed):
            return now
        accepted = min(now, placed)
        if origin is Origin.LIVE and now - accepted > MAX_ARRIVAL_DELAY:
            return now
        return accepted

    def _reply_opened(self, event: ReplyOpened, out: list[Transition]) -> None:
        session = self._sessions.get(event.session_id)
        if session is None:
            return
        p = session.by_id.get(event.parent_id)
        if p is None:
            return  # a reply to a prompt we never saw accepted
        turn = p.turn
        known = turn is not None and (
            event.message_id in turn.replies or event.message_id in turn.done
        )
        if not known and event.message_id in _answered_before(session, p.id):
            return  # a late event of the reply to an earlier sending of this messageID
        if turn is None:
            turn = _Turn(session=session, members=[], last_activity=self._now)
        new_step = not known
        if new_step:
            turn.rejected = False  # a new step: the turn went on after a rejection
            p.last_reply = event.message_id
        turn.replies.add(event.message_id)
        turn.parent = p
        self._reply_turn[event.message_id] = turn
        if session.turn is not None and session.turn is not turn:
            for earlier in list(session.turn.members):
                self._join(turn, earlier, out)  # a newer request superseded that turn
        session.turn = turn
        # OpenCode answers only the latest user message: earlier ones were folded into this
        # request and share its reply; later ones wait for the turn after it.
        index = session.prompts.index(p)
        for q in session.prompts[: index + 1]:
            self._join(turn, q, out)
        for q in session.prompts[index + 1 :]:
            if q.turn is None:
                self._signal(q, Signal.BEHIND, out)
        if event.provider or event.model:
            # The reply says which model answers; the prompt only said which it asked for.
            session.provider, session.model = event.provider, event.model
            for q in turn.members:
                if (q.ref.provider, q.ref.model) != (event.provider, event.model):
                    q.ref = replace(q.ref, provider=event.provider, model=event.model)
        if new_step:
            self._turn_activity(turn, out, content=False)  # the next step of a reply began
        self._sub_agent_activity(session, out)

    def _activity(
        self, session_id: str, message_id: str, out: list[Transition], *, content: bool
    ) -> None:
        turn = self._reply_turn.get(message_id)
        if turn is not None:
            self._turn_activity(turn, out, content=content)
            session = turn.session
        else:
            found = self._sessions.get(session_id)
            if found is None:
                return
            session = found
        session.seen_at = session.stream_at = self._now
        if session.parent_id is not None:
            self._sub_agent_activity(session, out)

    def _turn_activity(self, turn: _Turn, out: list[Transition], *, content: bool) -> None:
        """The turn's reply is alive: its quiet ends; the first content is its first response."""
        turn.last_activity = self._now
        if content and turn.responded is None:
            turn.responded = self._now
            for p in list(turn.members):
                self._signal(p, Signal.OUTPUT, out)
        elif turn.open_stalls:
            for p in list(turn.members):
                self._signal(p, Signal.OUTPUT if content else Signal.STEP, out)

    def _sub_agent_activity(self, session: _Session, out: list[Transition]) -> None:
        """A sub-agent's work is its parent's running `task` tool at work."""
        if session.parent_id is None:
            return
        for ancestor in self._lineage(session.parent_id):
            turn = ancestor.turn
            if turn is not None and turn.responded is not None:
                self._turn_activity(turn, out, content=False)

    def _reply_finished(self, event: ReplyFinished, out: list[Transition]) -> None:
        session = self._sessions.get(event.session_id)
        if session is None:
            return
        turn = self._reply_turn.get(event.message_id)
        if turn is None:
            p = session.by_id.get(event.parent_id)
            if p is None or event.message_id in _answered_before(session, p.id):
                return  # not ours, or OpenCode's repeat of the reply to an earlier sending
            if p.turn is None or event.message_id not in p.turn.done:
                # Its opening was missed: open it now, then finish it.
                self._reply_opened(
                    ReplyOpened(
                        session.id, event.message_id, event.parent_id, event.provider, event.model
                    ),
                    out,
                )
            turn = p.turn
            if turn is None:
                return
        if event.message_id in turn.done:
            return  # OpenCode sends a completed assistant message twice
        self._sub_agent_activity(session, out)
        turn.done.add(event.message_id)
        turn.replies.discard(event.message_id)
        self._reply_turn.pop(event.message_id, None)
        if event.tokens is not None or event.cost is not None:
            owner = turn.owner
            out.append(
                Usage(
                    prompt=owner.ref,
                    at=self._wall,
                    provider=event.provider or owner.ref.provider,
                    model=event.model or owner.ref.model,
                    tokens=event.tokens,
                    cost=event.cost,
                )
            )
        ending = _ending(event.finish, event.error, produced=turn.responded is not None)
        if ending is None:
            self._turn_activity(turn, out, content=True)  # a step ended: the model called a tool
            turn.running_tools.clear()
            return
        outcome, reason = ending
        if outcome is Outcome.ANSWERED and turn.responded is None:
            self._turn_activity(turn, out, content=True)
        error = ErrorInfo(event.error, event.error_message) if event.error else None
        for p in list(turn.members):
            self._signal(p, Signal.FINISHED, out, ending=outcome, reason=reason, error=error)

    def _status(self, event: StatusChanged, out: list[Transition]) -> None:
        session = self._session(event.session_id)
        retry = (
            Retry(event.attempt, event.retry_message, event.next_retry_at)
            if event.run is SessionRun.RETRY
            else None
        )
        self._apply_run(session, event.run, retry, out)

    def _apply_run(
        self, session: _Session, run: SessionRun, retry: Retry | None, out: list[Transition]
    ) -> None:
        session.run = run
        session.retry = retry
        if run is SessionRun.IDLE:
            # The loop ended. Whatever is still pending will never be answered, and nobody is
            # asked any more: a wait for a person ends with it (in sub-agents too).
            self._release_session_requests(session, out, everything=True)
            for p in list(session.prompts):
                rejected = p.turn is not None and p.turn.rejected
                self._signal(p, Signal.REJECTED if rejected else Signal.IDLE, out)
            return
        for p in list(session.prompts):
            if p.phase is Phase.AWAITING_TURN:
                self._signal(p, Signal.TURN, out)
            self._signal(p, Signal.RETRY if run is SessionRun.RETRY else Signal.BUSY, out)

    def _session_failed(self, event: SessionFailed, out: list[Transition]) -> None:
        session = self._session(event.session_id)
        if session.failed_at is not None and self._now - session.failed_at < ERROR_ECHO_SECONDS:
            return  # the second report of a failure already handled
        aborted = event.error == ABORTED_ERROR
        error = ErrorInfo(event.error, event.message)
        # The failure is the running turn's; before any turn began, the prompts awaiting one.
        started = [p for p in session.prompts if p.phase in STARTED]
        victims = started or [p for p in session.prompts if p.phase is Phase.AWAITING_TURN]
        if victims:
            outcome = Outcome.ABORTED if aborted else Outcome.FAILED
            for p in victims:
                self._signal(p, Signal.ERROR, out, ending=outcome, reason=event.error, error=error)
        elif aborted:
            return  # an abort with nothing running asks nothing of us
        else:
            # The prompt failed before OpenCode stored it: the error is all there is of it.
            ref = PromptRef(
                server=self.server,
                session_id=session.id,
                message_id=None,
                accepted_at=self._wall,
                directory=session.directory,
                parent_session_id=session.parent_id,
                provider=session.provider,
                model=session.model,
            )
            at = self._wall
            out.append(Accepted(prompt=ref, at=at))
            out.append(
                Stalled(ref, StallKind.FAILED, at, waited=0.0, reason=event.error, error=error)
            )
            out.append(Completed(ref, Outcome.FAILED, at, duration=0.0, reason=event.error))
            session.last_outcome, session.last_outcome_at = Outcome.FAILED, self._now
        if not aborted:
            session.failed_at = self._now

    def _session_deleted(self, session_id: str, out: list[Transition]) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            self._release_session_requests(session, out, everything=True)
            for p in list(session.prompts):
                self._signal(p, Signal.DELETED, out)
            del self._sessions[session_id]
            self._last_seen.pop(session_id, None)
            self._idle.discard(session_id)
        self._deleted[session_id] = None
        while len(self._deleted) > REMEMBERED_DELETED:
            self._deleted.popitem(last=False)

    def _asked(self, session_id: str, request_id: str, out: list[Transition]) -> None:
        session = self._session(session_id)
        session.asked.add(request_id)
        self._asked_in[request_id] = session_id
        for s in self._lineage(session_id):
            self._wait_on(s, request_id, out)

    def _wait_on(self, session: _Session, request_id: str, out: list[Transition]) -> None:
        if not session.waiting:
            session.blocked_since = self._now
            session.waiting.add(request_id)
            for p in list(session.prompts):
                self._signal(p, Signal.ASKED, out)
        else:
            session.waiting.add(request_id)

    def _release_request(self, request_id: str, session_id: str, out: list[Transition]) -> None:
        """A request was answered (or is moot): whoever waited on it only may go on."""
        origin_id = self._asked_in.pop(request_id, session_id)
        origin = self._sessions.get(origin_id)
        if origin is not None:
            origin.asked.discard(request_id)
        for s in self._lineage(origin_id):
            if request_id in s.waiting:
                s.waiting.discard(request_id)
                if not s.waiting:
                    self._unblock(s, out)

    def _release_session_requests(
        self, session: _Session, out: list[Transition], *, everything: bool
    ) -> None:
        """The session stopped: its own requests are moot for its ancestors too; ``everything``
        also ends its own wait for those of its sub-agents."""
        for request_id in list(session.asked):
            self._release_request(request_id, session.id, out)
        if everything and session.waiting:
            session.waiting.clear()
            self._unblock(session, out)

    def _unblock(self, session: _Session, out: list[Transition]) -> None:
        if session.blocked_since is None:
            return
        blocked_since = session.blocked_since
        turns = {id(p.turn): p.turn for p in session.prompts if p.phase in BLOCKED and p.turn}
        for p in list(session.prompts):
            self._signal(p, Signal.ANSWERED, out)
        for turn in turns.values():
            turn.last_activity += self._now - max(blocked_since, turn.last_activity)
        session.blocked_since = None

    def _reconcile(self, snap: SessionSnapshot, out: list[Transition]) -> None:
        """Bring a session up to date with a REST read, without counting anything twice.

        What the snapshot could not read (None) changes nothing; what the stream said of the
        session after the read began wins over the read.
        """
        session = self._session(snap.session_id)
        session.directory = snap.directory or session.directory
        fresh = session.stream_at < snap.taken_at  # a tie goes to the stream
        if fresh and snap.waiting_on is not None:
            self._reconcile_waiting(session, set(snap.waiting_on), out)
        if fresh and snap.run is not None and snap.run is not SessionRun.IDLE:
            retry = (
                Retry(snap.attempt, snap.retry_message, snap.next_retry_at)
                if snap.run is SessionRun.RETRY
                else None
            )
            self._apply_run(session, snap.run, retry, out)
        # Only a session that runs (as the newest word on it says) has prompts still to answer.
        running = (snap.run if fresh else session.run) in (SessionRun.BUSY, SessionRun.RETRY)
        for ps in snap.prompts or ():
            replies = _own_replies(session, ps)
            last = replies[-1] if replies else None
            produced = any(r.has_content for r in replies)
            ending = _ending(last.finish, last.error, produced=produced) if last else None
            done = last is not None and last.completed and ending is not None
            p = session.by_id.get(ps.message_id)
            if p is None:
                if done or not running:
                    continue  # ended while we were not looking, or nothing says it still runs
                if (
                    session.ended is not None and (ps.message_id, ps.created_at) in session.ended
                ) or (ps.created_at is not None and ps.created_at <= session.ended_before):
                    continue  # it ended on the stream (maybe after the read began)
                admitted = PromptAdmitted(
                    snap.session_id, ps.message_id, ps.created_at, snap.directory, Origin.RECONCILED
                )
                self._admit(admitted, out)
                p = session.by_id.get(ps.message_id)
                if p is None:
                    continue
            self._adopt_replies(session, replies, p, out)
            if done and ending is not None and last is not None and self._is_pending(p):
                error = ErrorInfo(last.error, last.error_message) if last.error else None
                self._signal(
                    p, Signal.FINISHED, out, ending=ending[0], reason=ending[1], error=error
                )
        if fresh and snap.run is SessionRun.IDLE:
            session.run = SessionRun.IDLE
            session.retry = None
            self._release_session_requests(session, out, everything=True)
            signal = Signal.LOST if snap.restarted else Signal.IDLE
            for p in list(session.prompts):
                # Newer prompts are newer than the read; one awaiting its turn has it a moment
                # after it is stored, so an idle read ends it only once that moment has passed.
                settled = NO_TURN_GAP if p.phase is Phase.AWAITING_TURN else 0.0
                if p.accepted <= snap.taken_at - settled:
                    self._signal(p, signal, out)

    def _reconcile_waiting(
        self, session: _Session, pending: set[str], out: list[Transition]
    ) -> None:
        for request_id in session.asked - pending:
            self._release_request(request_id, session.id, out)
        for request_id in pending - session.asked:
            self._asked(session.id, request_id, out)

    def _adopt_replies(
        self,
        session: _Session,
        replies: tuple[ReplySnapshot, ...],
        p: _Prompt,
        out: list[Transition],
    ) -> None:
        opened = False
        for reply in replies:
            turn = p.turn
            if turn is not None and (
                reply.message_id in turn.replies or reply.message_id in turn.done
            ):
                continue  # known replies keep their clocks: a read must not hide a silence
            self._reply_opened(ReplyOpened(session.id, reply.message_id, p.id), out)
            opened = True
            if p.turn is not None and not reply.completed:
                p.turn.running_tools.update(reply.running_tools)
        turn = p.turn
        if turn is not None and turn.responded is None and any(r.has_content for r in replies):
            kept = turn.last_activity
            self._activity(session.id, replies[-1].message_id, out, content=True)
            if not opened:
                turn.last_activity = kept

    # -- helpers ------------------------------------------------------------------------------

    def _deadline(self, p: _Prompt) -> float | None:
        """When ``p`` is due (monotonic), as its phase says; None when no clock runs for it."""
        match p.phase:
            case Phase.AWAITING_TURN:
                return p.accepted + self.timeouts.turn_start
            case Phase.WAITING | Phase.RETRYING:
                if StallKind.NO_RESPONSE in p.fired or p.clock_start is None:
                    return None
                return p.clock_start + self.timeouts.first_response
            case Phase.REPLYING:
                turn = p.turn
                if StallKind.INACTIVE in p.fired or turn is None:
                    return None
                quiet = self.timeouts.tool if turn.running_tools else self.timeouts.inactivity
                return turn.last_activity + quiet
            case _:
                return None

    @staticmethod
    def _is_pending(p: _Prompt) -> bool:
        return p.live

    def _touch(self, event: Event, out: list[Transition]) -> None:
        """Note the sessions whose deadlines ``event`` may have moved earlier."""
        mine: set[str] = set()
        session_id = getattr(event, "session_id", None)
        if isinstance(session_id, str):
            mine.update(s.id for s in self._lineage(session_id))
        message_id = getattr(event, "message_id", None)
        if isinstance(message_id, str) and (turn := self._reply_turn.get(message_id)):
            mine.add(turn.session.id)
        self._after(out, mine)

    def _after(self, out: list[Transition], mine: set[str] | None = None) -> None:
        """Bookkeeping for the sessions this event or tick concerns (``mine``, and those of
        ``out``): deadlines to recompute, the idle order, the state history. Only these: a batch
        of events must not cost the square of its sessions."""
        concerned = mine if mine is not None else set()
        concerned.update(t.prompt.session_id for t in out)
        self._touched |= concerned
        for sid in concerned:
            if (session := self._sessions.get(sid)) is not None:
                self._note_if_idle(session)  # whichever way its prompts ended
                self._note_state(session)

    def _note_state(self, session: _Session) -> None:
        state = self._session_state(session)
        if session.history is None:
            session.history = deque(maxlen=HISTORY_PER_SESSION)
        elif session.history[-1][0] is state:
            return
        session.history.append((state, self._now))

    def _session_state(self, session: _Session) -> SessionState:
        if session.stalled:
            return SessionState.STALLED
        if session.waiting:
            return SessionState.WAITING_FOR_PERSON
        if session.retry is not None:
            return SessionState.RETRYING
        if session.prompts or session.run in (SessionRun.BUSY, SessionRun.RETRY):
            return SessionState.WORKING
        if session.last_outcome is Outcome.FAILED:
            return SessionState.FAILED
        return SessionState.IDLE

    def _refresh_deadlines(self) -> None:
        """Schedule the current deadlines of touched sessions (earlier ones replace later ones)."""
        for session_id in self._touched:
            session = self._sessions.get(session_id)
            if session is None:
                continue
            for p in session.prompts:
                if (deadline := self._deadline(p)) is not None:
                    self._deadlines.schedule(p, deadline)
        self._touched.clear()

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session(id=session_id, seen_at=self._now)
            self._last_seen[session_id] = next(self._stamps)
            self._note_if_idle(session)
            self._enforce_session_limit(keep=session_id)
        else:
            self._sessions.move_to_end(session_id)
            self._last_seen[session_id] = next(self._stamps)  # an idle entry is re-checked
            session.seen_at = self._now
        return session

    def _note_if_idle(self, session: _Session) -> None:
        if not session.prompts and (seen := self._last_seen.get(session.id)) is not None:
            self._idle.schedule(session.id, seen)  # an older entry stays and is re-checked

    def _least_recent_idle(self, keep: str) -> str | None:
        """The first session without prompts in the order of ``_sessions``, other than ``keep``."""
        while (top := self._idle.peek()) is not None:
            seen, session_id = top
            session = self._sessions.get(session_id)
            idle = session is not None and not session.prompts and session_id != keep
            if idle and self._last_seen[session_id] == seen:
                return session_id
            self._idle.pop()  # gone, busy (noted again when its prompts end), or seen since
            if idle:
                self._idle.schedule(session_id, self._last_seen[session_id])
        if keep in self._sessions and not self._sessions[keep].prompts:
            self._idle.schedule(keep, self._last_seen[keep])  # it stays a candidate later
        return None

    def _lineage(self, session_id: str) -> Iterator[_Session]:
        """The session and its ancestors (sub-agents nest), nearest first."""
        session = self._sessions.get(session_id)
        seen: set[str] = set()
        while session is not None and session.id not in seen and len(seen) < MAX_LINEAGE:
            seen.add(session.id)
            yield session
            session = self._sessions.get(session.parent_id) if session.parent_id else None

    def _enforce_session_limit(self, keep: str) -> None:
        while len(self._sessions) > self.limits.sessions:
            victim_id = self._least_recent_idle(keep) or next(
                sid for sid in self._sessions if sid != keep
            )
            victim = self._sessions[victim_id]
            self.evicted_sessions += 1
            self._release_session_requests(victim, self._out, everything=True)
            self._evict(victim.prompts, "session_limit", self._out)
            self._sessions.pop(victim_id, None)
            self._last_seen.pop(victim_id, None)
            self._idle.discard(victim_id)

    def _enforce_prompt_limit(self, out: list[Transition]) -> None:
        while self._pending > self.limits.prompts and (top := self._by_age.peek()) is not None:
            oldest = top[1]
            if not self._is_pending(oldest):
                self._by_age.pop()
                continue
            # The whole turn goes: a turn without its oldest prompts would answer a stranger.
            group = list(oldest.turn.members) if oldest.turn is not None else [oldest]
            self._evict(group, "prompt_limit", out)

    def _evict(self, prompts: Iterable[_Prompt], why: str, out: list[Transition]) -> None:
        for p in list(prompts):
            if self._is_pending(p):
                self.evicted_prompts += 1
                self._signal(p, Signal.EVICTED, out, ending=Outcome.EVICTED, reason=why)


def _started(session: _Session) -> bool:
    """Whether a prompt of the session is in its turn."""
    in_phase = session.in_phase
    return any(in_phase[phase] for phase in STARTED)


def _state(p: _Prompt) -> PromptState:
    return PromptState.STALLED if p.stall is not None else PHASE_STATE[p.phase]


def _by_acceptance(p: _Prompt) -> float:
    return p.accepted


def _answered_before(session: _Session, message_id: str) -> set[str]:
    """The newest replies of the earlier sendings of ``message_id`` that ended here."""
    if session.ended is None:
        return set()
    return {reply for (mid, _), reply in session.ended.items() if mid == message_id and reply}


def _own_replies(session: _Session, ps: PromptSnapshot) -> tuple[ReplySnapshot, ...]:
    """The replies a read shows for the latest sending of a user message: those after the
    newest reply of an earlier sending that ended here (the read lists them oldest first)."""
    old = _answered_before(session, ps.message_id)
    if not old:
        return ps.replies
    for index in range(len(ps.replies) - 1, -1, -1):
        if ps.replies[index].message_id in old:
            return ps.replies[index + 1 :]
    return ps.replies


def _ending(
    finish: str | None, error: str | None, *, produced: bool
) -> tuple[Outcome, str | None] | None:
    """How a completed assistant message ends its prompt; None for an intermediate step.

    ``produced`` says the reply had output (text, a tool call) before it completed.
    """
    if error is not None:
        return (Outcome.ABORTED if error == ABORTED_ERROR else Outcome.FAILED), error
    if finish is None:
        # `/session/{id}/shell` ends this way after its bash tool ran; an abort while OpenCode
        # waits to retry the provider ends this way with nothing produced.
        outcome = Outcome.ANSWERED if produced else Outcome.ABORTED
        return outcome, "completed_without_finish"
    if finish == INTERMEDIATE_FINISH:
        return None
    if finish in FAILED_FINISHES:
        return Outcome.FAILED, finish
    return Outcome.ANSWERED, finish
