"""Matches accepted prompts with their replies and decides when one has stalled; pure, no I/O.

Feed it events with ``feed(event, now)``, call ``tick(now)`` at ``next_deadline()``; both return the
transitions that happened. ``now`` is wall-clock seconds since the epoch, supplied by the caller.

The life of one prompt::

    admitted ──► WAITING ──first content──► REPLYING ──finish:"stop"──► answered
                    │   └─ st retry ─► RETRYING       │  └ finish:"tool-calls" ─► REPLYING (next step)
                    │   └─ permission ─► BLOCKED       │  └ completed, no finish, after output ─► answered
                    ├─ first_response timeout ─► stall no_response     ├─ silence ─► stall inactive
                    ├─ session idle, no reply ─► dropped               ├─ error ─► failed (stall) | aborted
                    ├─ no turn starts (noReply) ─► no_reply            ├─ idle after a reject ─► aborted
                    ├─ session deleted ─► aborted
                    └─ later prompt's reply opens ─► folded into it (ends with its outcome)

    session.error with nothing pending (the prompt failed before it was stored) ─► failed (stall)

Each stall kind fires at most once per prompt. ``no_response`` and ``inactive`` resolve once, when
the reply arrives or the prompt ends; ``dropped`` and ``failed`` are final.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

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
    ToolProgress,
)
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
)

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
# The clock offset between the server and us is the smallest delay seen between a prompt's
# `time.created` and its arrival, over this many recent prompts (a window, so clock steps age out).
OFFSET_SAMPLES = 32
# A live prompt whose corrected time is this far before its arrival means a server clock we
# cannot use (or a jump): we time that prompt from its arrival instead.
MAX_ARRIVAL_DELAY = 60.0
# Server times further than this from ours are not a clock offset but a clock (or an id format)
# we cannot use: such samples are ignored, so that they never age a recovered prompt by days.
MAX_CLOCK_SKEW = 3600.0
# A real prompt stored in an idle session turns it busy within milliseconds (1.2 s on a cold
# server); an earlier message still without a turn when the next one arrives this much later was
# sent with `noReply`. Closer together they may be one request of two prompts, so they fold.
NO_TURN_GAP = 1.0
# Deleted sessions are remembered (by id, this many) so that late or repeated events for one
# do not bring it back.
REMEMBERED_DELETED = 1024
FINAL_KINDS = frozenset({StallKind.DROPPED, StallKind.FAILED})
_LATER_ONLY = (ReplyActivity, Heartbeat, Ignored, Malformed, SessionSeen)


class _Why(enum.StrEnum):
    IDLE_WITHOUT_REPLY = "idle_without_reply"
    IDLE_BEFORE_FINISH = "idle_before_finish"
    COMPLETED_WITHOUT_FINISH = "completed_without_finish"
    SERVER_RESTART = "server_restart"  # the server lost the prompt while the stream was down
    SESSION_DELETED = "session_deleted"
    REJECTED = "rejected"  # a person rejected a permission or question, which ends the turn
    NO_TURN_STARTED = "no_turn_started"


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


@dataclass(slots=True, eq=False)  # identity matters: two prompts may look alike
class _Prompt:
    id: str  # the user message id (``ref.message_id``, which only a never-stored prompt lacks)
    ref: PromptRef
    created_at: float  # the server's time.created, to recognise re-sends
    clock_start: float | None  # None while queued behind an earlier prompt of the same session
    last_activity: float
    responded_at: float | None = None
    replies: set[str] = field(default_factory=set)
    running_tools: set[str] = field(default_factory=set)
    stall: StallKind | None = None
    fired: set[StallKind] = field(default_factory=set)
    folded: list[_Prompt] = field(default_factory=list)
    turn_started: bool = True  # False until the session goes busy for it (see Timeouts.turn_start)
    rejected: bool = False  # a person said no to this reply's permission or question


@dataclass(slots=True, eq=False)
class _Session:
    id: str
    parent_id: str | None = None
    directory: str | None = None
    run: SessionRun | None = None
    retry: Retry | None = None
    waiting_on: set[str] = field(default_factory=set)  # permission/question request ids
    blocked_since: float | None = None
    prompts: list[_Prompt] = field(default_factory=list)
    # (message id, time.created) of prompts that ended: a stream that repeats an old admission
    # must not make a new prompt of it, while a repeated messageID (a new time) still does.
    ended: OrderedDict[tuple[str, float], None] = field(default_factory=OrderedDict)
    failed_at: float | None = None  # when a session.error last ended a prompt here


class Tracker:
    """The prompt/reply state machine for one OpenCode server."""

    def __init__(
        self, server: str, timeouts: Timeouts | None = None, limits: Limits | None = None
    ) -> None:
        self.server = server
        self.timeouts = timeouts or Timeouts()
        self.limits = limits or Limits()
        self.evicted_sessions = 0
        self.evicted_prompts = 0
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._reply_owner: dict[str, tuple[str, str]] = {}  # assistant id -> (session, user msg)
        self._pending = 0
        self._arrival_delays: deque[float] = deque(maxlen=OFFSET_SAMPLES)
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self.deadline_may_be_earlier = False
        # Each pending prompt's deadline, or an earlier time (re-checked when it comes due), and
        # the sessions whose deadlines may have moved earlier since: see _refresh_deadlines.
        self._deadlines: Deadlines[_Prompt] = Deadlines()
        self._touched: set[str] = set()
        self._by_age: Deadlines[_Prompt] = Deadlines()  # pending leads by accepted_at, for eviction
        # Sessions without prompts by when they were last looked up (the order of _sessions), so
        # the session limit finds the least recently active idle one without a scan.
        self._stamps = itertools.count()
        self._last_seen: dict[str, int] = {}
        self._idle: Deadlines[str] = Deadlines()

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
        every = (
            (session, lead, p)
            for session in self._sessions.values()
            for lead in session.prompts
            for p in (lead, *lead.folded)
        )
        chosen = (
            sorted(every, key=_by_acceptance)
            if limit is None
            else heapq.nsmallest(limit, every, key=_by_acceptance)
        )
        return [
            PendingPrompt(
                ref=p.ref,
                state=self._state(session, lead, p),
                age=max(0.0, now - p.ref.accepted_at),
            )
            for session, lead, p in chosen
        ]

    def summary(self, now: float) -> PendingSummary:
        """How many prompts are pending in each state, and the oldest one's age, in one pass."""
        counts = dict.fromkeys(PromptState, 0)
        oldest: float | None = None
        for session in self._sessions.values():
            for lead in session.prompts:
                for p in (lead, *lead.folded):
                    counts[self._state(session, lead, p)] += 1
                    if oldest is None or p.ref.accepted_at < oldest:
                        oldest = p.ref.accepted_at
        age = 0.0 if oldest is None else max(0.0, now - oldest)
        return PendingSummary(counts=counts, oldest_age=age)

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to check next, or None when no timer runs."""
        self._refresh_deadlines()
        while (top := self._deadlines.peek()) is not None:
            at, prompt = top
            actual = self._current_deadline(prompt)
            if actual == at:
                return at
            self._deadlines.pop()  # moved later, or no longer runs
            if actual is not None:
                self._deadlines.schedule(prompt, actual)
        return None

    def observe_clock(self, server_time: float, now: float) -> None:
        """Note an event the server stamped ``server_time`` and we received at ``now``."""
        delay = now - server_time
        if math.isfinite(delay) and abs(delay) <= MAX_CLOCK_SKEW:
            self._arrival_delays.append(delay)

    @property
    def clock_offset(self) -> float | None:
        """Our clock minus the server's, plus the smallest delivery delay; None before a sample."""
        return min(self._arrival_delays, default=None)

    # -- inputs -------------------------------------------------------------------------------

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Apply new timeouts to pending prompts too (config reload)."""
        self.timeouts = timeouts
        self._touched.update(sid for sid, s in self._sessions.items() if s.prompts)

    def tick(self, now: float) -> list[Transition]:
        """Fire the stalls whose deadline has passed."""
        out: list[Transition] = []
        self._refresh_deadlines()
        due: list[tuple[_Session, _Prompt, _Prompt]] = []
        while (top := self._deadlines.peek()) is not None and top[0] <= now:
            self._deadlines.pop()
            p = top[1]
            found = self._place(p)
            if found is None:
                continue  # ended or forgotten
            session, lead = found
            deadline = self._deadline(session, lead, p)
            if deadline is None:
                continue
            if now < deadline:
                self._deadlines.schedule(p, deadline)  # it moved later meanwhile
                continue
            due.append((session, lead, p))
        for session, lead, p in due:
            if lead not in session.prompts:
                continue  # ended by an earlier one of these (its no_reply)
            if not lead.turn_started:
                why = _Why.NO_TURN_STARTED.value
                self._complete(session, lead, Outcome.NO_REPLY, now, out, reason=why)
                continue
            kind = StallKind.INACTIVE if lead.responded_at is not None else StallKind.NO_RESPONSE
            self._fire(session, p, kind, now, out, only_self=True)
            if (deadline := self._deadline(session, lead, p)) is not None:
                self._deadlines.schedule(p, deadline)
        return out

    def feed(self, event: Event, now: float) -> list[Transition]:
        """Apply one event; returns what it changed."""
        out: list[Transition] = []
        if self._deleted and getattr(event, "session_id", None) in self._deleted:
            self.deadline_may_be_earlier = False
            return out
        match event:
            case PromptAdmitted():
                self._admit(event, now, out)
            case ReplyOpened():
                self._reply_opened(event, now, out)
            case ReplyActivity(session_id=sid, message_id=mid, kind=kind):
                self._activity(sid, mid, now, out, content=kind is PartKind.CONTENT)
            case ToolProgress(session_id=sid, message_id=mid, call_id=call, running=running):
                prompt = self._owner(mid)
                if prompt is not None:
                    if running:
                        prompt.running_tools.add(call)
                    else:
                        prompt.running_tools.discard(call)
                self._activity(sid, mid, now, out, content=True)
            case ReplyFinished():
                self._reply_finished(event, now, out)
            case StatusChanged():
                self._status(event, now, out)
            case SessionFailed():
                self._session_failed(event, now, out)
            case SessionDeleted(session_id=sid):
                self._session_deleted(sid, now, out)
            case HumanAsked(session_id=sid, request_id=rid):
                for session in self._lineage(sid):
                    if not session.waiting_on:
                        session.blocked_since = now
                    session.waiting_on.add(rid)
            case HumanAnswered(session_id=sid, request_id=rid, rejected=rejected):
                own = self._sessions.get(sid)
                if rejected and own is not None and own.prompts:
                    own.prompts[0].rejected = True
                for session in self._lineage(sid):
                    session.waiting_on.discard(rid)
                    if not session.waiting_on:
                        self._unblock(session, now)
            case SessionSnapshot():
                self._reconcile(event, now, out)
            case SessionSeen(session_id=sid, parent_session_id=parent, directory=directory):
                session = self._session(sid)
                session.parent_id = parent if parent != sid else None
                session.directory = directory or session.directory
            case _:
                pass
        # Model output and noise only push deadlines later, unless they changed something (a
        # first response switches to the inactivity timer, which may be shorter). Callers use
        # this to skip an O(pending prompts) reschedule on every streamed delta.
        self.deadline_may_be_earlier = bool(out) or not isinstance(event, _LATER_ONLY)
        if self.deadline_may_be_earlier:
            self._touch(event, out)
        return out

    # -- transitions --------------------------------------------------------------------------

    def _admit(self, event: PromptAdmitted, now: float, out: list[Transition]) -> None:
        session = self._session(event.session_id)
        mid = event.message_id
        if any(p.id == mid for lead in session.prompts for p in (lead, *lead.folded)):
            return  # re-sent, or a repeated messageID folded into the same pending prompt
        if (mid, event.created_at) in session.ended:
            return  # a re-send of a message whose reply we already saw
        accepted_at = self._accepted_at(event.created_at, now, event.origin)
        for earlier in list(session.prompts):
            if not earlier.turn_started and accepted_at - earlier.ref.accepted_at >= NO_TURN_GAP:
                why = _Why.NO_TURN_STARTED.value
                self._complete(session, earlier, Outcome.NO_REPLY, now, out, reason=why)
        ref = PromptRef(
            server=self.server,
            session_id=session.id,
            message_id=mid,
            accepted_at=accepted_at,
            directory=event.directory or session.directory,
            parent_session_id=session.parent_id,
        )
        queued = bool(session.prompts)
        prompt = _Prompt(
            id=mid,
            ref=ref,
            created_at=event.created_at,
            clock_start=None if queued else accepted_at,
            last_activity=accepted_at,
            # A prompt stored while its session runs is picked up by that run; in an idle session
            # only a `busy` says a turn started for it.
            turn_started=session.run in (SessionRun.BUSY, SessionRun.RETRY),
        )
        session.prompts.append(prompt)
        self._by_age.schedule(prompt, accepted_at)
        self._pending += 1
        out.append(Accepted(prompt=ref, at=now))
        self._enforce_prompt_limit()

    def _reply_opened(
        self, event: ReplyOpened, now: float, out: list[Transition], *, touch: bool = True
    ) -> None:
        session = self._sessions.get(event.session_id)
        if session is None:
            return
        index = next((i for i, p in enumerate(session.prompts) if p.id == event.parent_id), None)
        if index is None:
            return  # a reply to a prompt we never saw accepted
        prompt = session.prompts[index]
        if event.message_id not in prompt.replies:
            prompt.rejected = False  # a new step: the turn went on after a rejection
        for p in session.prompts[: index + 1]:
            p.turn_started = True
        if prompt.ref.provider is None and (event.provider or event.model):
            prompt.ref = replace(prompt.ref, provider=event.provider, model=event.model)
        prompt.replies.add(event.message_id)
        self._reply_owner[event.message_id] = (session.id, prompt.id)
        if index:
            # OpenCode answers only the latest user message: earlier ones were folded into this
            # request and share its outcome.
            earlier = session.prompts[:index]
            del session.prompts[:index]
            if prompt.clock_start is None:
                # Its turn began with the request it was folded into, not after a reply.
                prompt.clock_start = prompt.ref.accepted_at
            for p in earlier:
                # A folded prompt keeps its own stall state: it is still unanswered, and the
                # reply it now waits for resolves it.
                prompt.folded.extend([p, *p.folded])
                p.folded.clear()
        if prompt.clock_start is None:
            prompt.clock_start = now
        if prompt.responded_at is not None and touch:
            prompt.last_activity = now  # the next step of a multi-step reply began

    def _activity(
        self, session_id: str, message_id: str, now: float, out: list[Transition], *, content: bool
    ) -> None:
        prompt = self._owner(message_id)
        if prompt is not None:
            prompt.last_activity = now
            if prompt.responded_at is None and content:
                prompt.responded_at = now
                out.append(
                    FirstResponse(prompt=prompt.ref, at=now, latency=now - prompt.ref.accepted_at)
                )
            if prompt.responded_at is not None:
                self._resolve(prompt, now, out)
        # A sub-agent's work is the parent's running `task` tool at work.
        for ancestor in self._lineage(session_id, include_self=False):
            for p in ancestor.prompts:
                if p.responded_at is not None:
                    p.last_activity = max(p.last_activity, now)

    def _reply_finished(self, event: ReplyFinished, now: float, out: list[Transition]) -> None:
        session = self._sessions.get(event.session_id)
        if session is None:
            return
        prompt = self._owner(event.message_id) or next(
            (p for p in session.prompts if p.id == event.parent_id), None
        )
        if prompt is None:
            return
        prompt.replies.discard(event.message_id)
        self._reply_owner.pop(event.message_id, None)
        ending = _ending(event.finish, event.error, produced=prompt.responded_at is not None)
        if ending is None:
            self._activity(event.session_id, event.message_id, now, out, content=True)
            prompt.running_tools.clear()
            return
        outcome, reason = ending
        if outcome is Outcome.ANSWERED and prompt.responded_at is None:
            self._activity(event.session_id, event.message_id, now, out, content=True)
        error = ErrorInfo(event.error, event.error_message) if event.error else None
        self._complete(session, prompt, outcome, now, out, reason=reason, error=error)

    def _session_failed(self, event: SessionFailed, now: float, out: list[Transition]) -> None:
        session = self._session(event.session_id)
        if session.failed_at is not None and now - session.failed_at < ERROR_ECHO_SECONDS:
            return  # the second report of a failure already handled
        aborted = event.error == ABORTED_ERROR
        error = ErrorInfo(event.error, event.message)
        if session.prompts:
            outcome = Outcome.ABORTED if aborted else Outcome.FAILED
            lead = session.prompts[0]
            self._complete(session, lead, outcome, now, out, reason=event.error, error=error)
        elif aborted:
            return  # an abort with nothing running asks nothing of us
        else:
            # The prompt failed before OpenCode stored it: the error is all there is of it.
            ref = PromptRef(
                server=self.server,
                session_id=session.id,
                message_id=None,
                accepted_at=now,
                directory=session.directory,
                parent_session_id=session.parent_id,
            )
            out.append(Accepted(prompt=ref, at=now))
            out.append(
                Stalled(
                    prompt=ref,
                    kind=StallKind.FAILED,
                    at=now,
                    waited=0.0,
                    reason=event.error,
                    error=error,
                )
            )
            out.append(
                Completed(
                    prompt=ref, outcome=Outcome.FAILED, at=now, duration=0.0, reason=event.error
                )
            )
        if not aborted:
            session.failed_at = now

    def _session_deleted(self, session_id: str, now: float, out: list[Transition]) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            why = _Why.SESSION_DELETED.value
            for prompt in list(session.prompts):
                self._complete(session, prompt, Outcome.ABORTED, now, out, reason=why)
            self._last_seen.pop(session_id, None)
            self._idle.discard(session_id)
        self._deleted[session_id] = None
        while len(self._deleted) > REMEMBERED_DELETED:
            self._deleted.popitem(last=False)

    def _reconcile(self, snap: SessionSnapshot, now: float, out: list[Transition]) -> None:
        """Bring a session up to date with a REST read, without counting anything twice."""
        session = self._session(snap.session_id)
        session.directory = snap.directory or session.directory
        if snap.run is SessionRun.RETRY:
            session.retry = Retry(snap.attempt, snap.retry_message, snap.next_retry_at)
        else:
            session.retry = None
        session.run = snap.run
        if set(snap.waiting_on) != session.waiting_on:
            if snap.waiting_on and not session.waiting_on:
                session.blocked_since = now
            session.waiting_on = set(snap.waiting_on)
            if not session.waiting_on:
                self._unblock(session, now)
        for ps in snap.prompts:
            last = ps.replies[-1] if ps.replies else None
            ending = (
                _ending(last.finish, last.error, produced=any(r.has_content for r in ps.replies))
                if last is not None
                else None
            )
            done = last is not None and last.completed and ending is not None
            prompt = self._pending_prompt(session, ps.message_id)
            if prompt is None:
                if done or snap.run is SessionRun.IDLE:
                    continue  # ended while we were not looking: nothing left to watch
                if (ps.message_id, ps.created_at) in session.ended:
                    continue  # its ending reached us on the stream after the read began
                admitted = PromptAdmitted(
                    snap.session_id, ps.message_id, ps.created_at, snap.directory, Origin.RECONCILED
                )
                self._admit(admitted, now, out)
                prompt = self._pending_prompt(session, ps.message_id)
                if prompt is None:
                    continue
            self._adopt_replies(snap, ps.replies, prompt, now, out)
            if done and ending is not None and last is not None:
                error = ErrorInfo(last.error, last.error_message) if last.error else None
                self._complete(session, prompt, ending[0], now, out, reason=ending[1], error=error)
        if snap.run is SessionRun.IDLE:
            why = _Why.SERVER_RESTART if snap.restarted else _Why.IDLE_WITHOUT_REPLY
            for prompt in list(session.prompts):
                if prompt.ref.accepted_at <= snap.taken_at:
                    self._drop(session, prompt, now, out, why)

    def _adopt_replies(
        self,
        snap: SessionSnapshot,
        replies: tuple[ReplySnapshot, ...],
        prompt: _Prompt,
        now: float,
        out: list[Transition],
    ) -> None:
        for reply in replies:
            opened = ReplyOpened(snap.session_id, reply.message_id, prompt.id)
            # Known replies keep their clocks: a read must not hide a silence.
            self._reply_opened(opened, now, out, touch=False)
            if not reply.completed:
                prompt.running_tools.update(reply.running_tools)
        if prompt.responded_at is None and any(r.has_content for r in replies):
            self._activity(snap.session_id, replies[-1].message_id, now, out, content=True)

    def _status(self, event: StatusChanged, now: float, out: list[Transition]) -> None:
        session = self._session(event.session_id)
        session.run = event.run
        if event.run is not SessionRun.IDLE:
            for prompt in session.prompts:
                prompt.turn_started = True
        if event.run is SessionRun.RETRY:
            session.retry = Retry(event.attempt, event.retry_message, event.next_retry_at)
            return
        session.retry = None
        if event.run is SessionRun.BUSY:
            return
        # Idle: the loop ended. Whatever is still pending will never be answered.
        if session.waiting_on:
            session.waiting_on.clear()
            self._unblock(session, now)
        for prompt in list(session.prompts):
            if prompt.rejected:
                # A person said no: the turn ended as they chose, nobody needs an alarm.
                reason = _Why.REJECTED.value
                self._complete(session, prompt, Outcome.ABORTED, now, out, reason=reason)
                continue
            why = _Why.IDLE_BEFORE_FINISH if prompt.responded_at else _Why.IDLE_WITHOUT_REPLY
            self._drop(session, prompt, now, out, why)

    def _drop(
        self, session: _Session, prompt: _Prompt, now: float, out: list[Transition], why: _Why
    ) -> None:
        if not prompt.turn_started:
            # Idle, and no turn ever started for it: a noReply message, not a lost prompt.
            reason = _Why.NO_TURN_STARTED.value
            self._complete(session, prompt, Outcome.NO_REPLY, now, out, reason=reason)
            return
        self._resolve(prompt, now, out, outcome=Outcome.DROPPED)
        self._fire(session, prompt, StallKind.DROPPED, now, out, reason=why.value)
        self._complete(session, prompt, Outcome.DROPPED, now, out, reason=why.value)

    def _fire(
        self,
        session: _Session,
        prompt: _Prompt,
        kind: StallKind,
        now: float,
        out: list[Transition],
        reason: str | None = None,
        *,
        error: ErrorInfo | None = None,
        only_self: bool = False,
    ) -> None:
        for p in (prompt,) if only_self else (prompt, *prompt.folded):
            if kind in p.fired:
                continue  # a folded prompt that had already stalled on its own
            p.fired.add(kind)
            if kind not in FINAL_KINDS:
                p.stall = kind
            out.append(
                Stalled(
                    prompt=p.ref,
                    kind=kind,
                    at=now,
                    waited=now - p.ref.accepted_at,
                    retry=session.retry,
                    reason=reason,
                    error=error,
                )
            )

    def _resolve(
        self, prompt: _Prompt, now: float, out: list[Transition], outcome: Outcome | None = None
    ) -> None:
        for p in (prompt, *prompt.folded):
            if p.stall is None:
                continue
            out.append(
                Resolved(
                    prompt=p.ref,
                    kind=p.stall,
                    at=now,
                    waited=now - p.ref.accepted_at,
                    outcome=outcome,
                )
            )
            p.stall = None

    def _complete(
        self,
        session: _Session,
        prompt: _Prompt,
        outcome: Outcome,
        now: float,
        out: list[Transition],
        reason: str | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        if prompt not in session.prompts:
            return
        self._resolve(prompt, now, out, outcome=outcome)
        if outcome is Outcome.FAILED:
            # It will never be answered: say so now, with the server's cause.
            error = error or ErrorInfo(reason or "unknown")
            self._fire(session, prompt, StallKind.FAILED, now, out, reason=reason, error=error)
        session.prompts.remove(prompt)
        self._deadlines.discard(prompt)
        self._by_age.discard(prompt)
        self._note_if_idle(session)
        for p in (prompt, *prompt.folded):
            self._pending -= 1
            duration = now - p.ref.accepted_at
            out.append(
                Completed(prompt=p.ref, outcome=outcome, at=now, duration=duration, reason=reason)
            )
            session.ended[(p.id, p.created_at)] = None
        while len(session.ended) > REMEMBERED_PER_SESSION:
            session.ended.popitem(last=False)
        for reply in prompt.replies:
            self._reply_owner.pop(reply, None)
        if session.prompts and session.prompts[0].clock_start is None:
            session.prompts[0].clock_start = now  # the next queued prompt's turn begins

    def _unblock(self, session: _Session, now: float) -> None:
        if session.blocked_since is None:
            return
        paused = now - session.blocked_since
        session.blocked_since = None
        for p in session.prompts:
            if p.clock_start is not None:
                p.clock_start += paused
            p.last_activity += paused

    # -- helpers ------------------------------------------------------------------------------

    def _deadline(self, session: _Session, lead: _Prompt, p: _Prompt) -> float | None:
        """When ``p`` (``lead`` or folded into it) is due; the reply's progress is the lead's."""
        if not lead.turn_started:
            return lead.ref.accepted_at + self.timeouts.turn_start if p is lead else None
        if session.waiting_on or p.clock_start is None:
            return None
        if lead.responded_at is None:
            if StallKind.NO_RESPONSE in p.fired:
                return None
            return p.clock_start + self.timeouts.first_response
        if StallKind.INACTIVE in p.fired:
            return None
        quiet = self.timeouts.tool if lead.running_tools else self.timeouts.inactivity
        return lead.last_activity + quiet

    def _accepted_at(self, created_at: float, now: float, origin: Origin) -> float:
        """When a prompt was accepted, on our clock: its `time.created`, corrected for the offset.

        Live and recovered prompts are timed alike this way; a live prompt whose server time is
        unusable falls back to its arrival.
        """
        if not math.isfinite(created_at):
            return now
        if origin is Origin.LIVE:
            self.observe_clock(created_at, now)
        offset = self.clock_offset
        # Without a sample yet, assume the clocks agree.
        accepted_at = min(now, created_at + (offset or 0.0))
        if origin is Origin.LIVE and now - accepted_at > MAX_ARRIVAL_DELAY:
            return now
        return accepted_at

    def _current_deadline(self, p: _Prompt) -> float | None:
        found = self._place(p)
        return None if found is None else self._deadline(found[0], found[1], p)

    def _place(self, p: _Prompt) -> tuple[_Session, _Prompt] | None:
        """The session of a pending prompt and its lead (itself, or the prompt it is folded into)."""
        session = self._sessions.get(p.ref.session_id)
        if session is None:
            return None
        for lead in session.prompts:
            if lead is p or p in lead.folded:
                return session, lead
        return None

    def _touch(self, event: Event, out: list[Transition]) -> None:
        """Note the sessions whose deadlines ``event`` may have moved earlier."""
        session_id = getattr(event, "session_id", None)
        if isinstance(session_id, str):
            self._touched.update(s.id for s in self._lineage(session_id))
        message_id = getattr(event, "message_id", None)
        if isinstance(message_id, str) and (owner := self._reply_owner.get(message_id)):
            self._touched.add(owner[0])
        self._touched.update(t.prompt.session_id for t in out)
        for t in out:
            if (session := self._sessions.get(t.prompt.session_id)) is not None:
                self._note_if_idle(session)  # whichever way its prompts ended

    def _refresh_deadlines(self) -> None:
        """Schedule the current deadlines of touched sessions (earlier ones replace later ones)."""
        for session_id in self._touched:
            session = self._sessions.get(session_id)
            if session is None:
                continue
            for lead in session.prompts:
                for p in (lead, *lead.folded):
                    if (deadline := self._deadline(session, lead, p)) is not None:
                        self._deadlines.schedule(p, deadline)
        self._touched.clear()

    def _state(self, session: _Session, lead: _Prompt, p: _Prompt) -> PromptState:
        """The state of ``p``, which is ``lead`` or folded into it."""
        if p.stall is not None:
            return PromptState.STALLED
        if session.waiting_on:
            return PromptState.BLOCKED
        if session.retry is not None:
            return PromptState.RETRYING
        return PromptState.REPLYING if lead.responded_at is not None else PromptState.WAITING

    def _pending_prompt(self, session: _Session, message_id: str) -> _Prompt | None:
        return next((p for p in session.prompts if p.id == message_id), None)

    def _owner(self, assistant_id: str) -> _Prompt | None:
        owner = self._reply_owner.get(assistant_id)
        if owner is None:
            return None
        session = self._sessions.get(owner[0])
        if session is None:
            return None
        return next((p for p in session.prompts if p.id == owner[1]), None)

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session(id=session_id)
            self._last_seen[session_id] = next(self._stamps)
            self._note_if_idle(session)
            self._enforce_session_limit()
        else:
            self._sessions.move_to_end(session_id)
            self._last_seen[session_id] = next(self._stamps)  # an idle entry is re-checked
        return session

    def _note_if_idle(self, session: _Session) -> None:
        if not session.prompts and (seen := self._last_seen.get(session.id)) is not None:
            self._idle.schedule(session.id, seen)  # an older entry stays and is re-checked

    def _least_recent_idle(self) -> str | None:
        """The first session without prompts in the order of ``_sessions``."""
        while (top := self._idle.peek()) is not None:
            seen, session_id = top
            session = self._sessions.get(session_id)
            idle = session is not None and not session.prompts
            if idle and self._last_seen[session_id] == seen:
                return session_id
            self._idle.pop()  # gone, busy (noted again when its prompts end), or seen since
            if idle:
                self._idle.schedule(session_id, self._last_seen[session_id])
        return None

    def _lineage(self, session_id: str, *, include_self: bool = True) -> Iterator[_Session]:
        session = self._sessions.get(session_id)
        seen: set[str] = set()
        if session is not None and not include_self:
            seen.add(session.id)
            session = self._sessions.get(session.parent_id) if session.parent_id else None
        while session is not None and session.id not in seen and len(seen) < MAX_LINEAGE:
            seen.add(session.id)
            yield session
            session = self._sessions.get(session.parent_id) if session.parent_id else None

    def _enforce_session_limit(self) -> None:
        while len(self._sessions) > self.limits.sessions:
            victim_id = self._least_recent_idle() or next(iter(self._sessions))
            victim = self._sessions.pop(victim_id)
            self._last_seen.pop(victim_id, None)
            self._idle.discard(victim_id)
            self.evicted_sessions += 1
            for lead in victim.prompts:
                self._forget(lead)

    def _enforce_prompt_limit(self) -> None:
        while self._pending > self.limits.prompts and (top := self._by_age.pop()) is not None:
            oldest = top[1]
            session = self._sessions.get(oldest.ref.session_id)
            if session is None or oldest not in session.prompts:
                continue  # folded into a later prompt, or already forgotten
            session.prompts.remove(oldest)
            self._forget(oldest)
            self._note_if_idle(session)

    def _forget(self, lead: _Prompt) -> None:
        self._deadlines.discard(lead)
        self._by_age.discard(lead)
        count = 1 + len(lead.folded)
        self._pending -= count
        self.evicted_prompts += count
        for reply in lead.replies:
            self._reply_owner.pop(reply, None)


def _by_acceptance(item: tuple[_Session, _Prompt, _Prompt]) -> float:
    return item[2].ref.accepted_at


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
        return outcome, _Why.COMPLETED_WITHOUT_FINISH.value
    if finish == INTERMEDIATE_FINISH:
        return None
    if finish in FAILED_FINISHES:
        return Outcome.FAILED, finish
    return Outcome.ANSWERED, finish
