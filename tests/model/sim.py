"""A small OpenCode 1.18 in a box: sessions whose loop picks up prompts, folds them, replies,
calls tools, asks people, fails, is aborted, deleted or loses prompts, as the real captures show.

Each action yields the stream events a watcher would see (fed to the tracker) and the facts of
what really happened (read by the reference judge): which prompts each turn picked up and when,
when its reply said something, how it ended. The shapes come from the captures in
tests/fixtures/opencode (normal, slow, hang, hang-mid, fail-retry, abort, permission,
permission-reject, two-prompts-queued*, unknown-model, no-reply, session-deleted,
duplicate-message-id*) and rules 1-14 of the reference's "How to decide whether a prompt was
answered".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import strategies as st

from watchdog.core.events import (
    Event,
    HumanAnswered,
    HumanAsked,
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
    ToolProgress,
)

SERVER_WALL = 1_800_000_000.0  # the server's (true) wall clock at monotonic 0
PICKUP_WINDOW = 0.75  # seconds: under the tracker's one-second gap for noReply messages


# -- facts: what really happened, for the judge ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fact:
    """Something that happened on the simulated server at monotonic time ``t``.

    ``what`` is one of: arrive, pickup, output, activity, tool_start, tool_end, step_end,
    turn_end, error (`session.error`), idle, ask, answer, delete, snapshot_idle, child.
    """

    t: float
    what: str
    session: str
    messages: tuple[str, ...] = ()
    outcome: str | None = None  # turn_end: answered | failed | aborted | rejected
    request: str | None = None
    parent: str | None = None  # child: the parent session
    taken: float | None = None  # snapshot_idle: when the read began


@dataclass
class Scenario:
    """The stream as the tracker sees it, the facts as they were, and our wall clock's steps."""

    events: list[tuple[float, Event]] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    wall_steps: list[tuple[float, float]] = field(default_factory=list)  # (from t, offset)
    end: float = 0.0

    def describe(self) -> str:
        """The stream and the facts, one line each, for a failing example."""
        lines = [f"{t:9.3f}  {_short(e)}" for t, e in self.events]
        lines.append("facts:")
        lines += [
            f"{f.t:9.3f}  {f.what} {f.session} {' '.join(f.messages)} {f.outcome or ''}"
            f"{f.request or ''}".rstrip()
            for f in self.facts
        ]
        return "\n".join(lines)

    def wall(self, t: float) -> float:
        """Our wall clock at monotonic ``t`` (the server's clock plus the steps so far)."""
        offset = 0.0
        for since, step in self.wall_steps:
            if t >= since:
                offset = step
        return SERVER_WALL + t + offset


# -- the simulated server ------------------------------------------------------------------------


@dataclass
class _Session:
    id: str
    parent: str | None = None
    stored: list[str] = field(default_factory=list)  # unanswered user messages, oldest first
    created: dict[str, float] = field(default_factory=dict)  # message -> monotonic arrival
    loop: bool = False  # an iteration of the loop runs
    members: list[str] = field(default_factory=list)  # what this iteration answers
    reply: str | None = None  # the open assistant message
    reply_parent: str | None = None
    replies: list[tuple[str, str, bool, bool]] = field(
        default_factory=list
    )  # (id, parent, done, content)
    output: bool = False  # the open reply said something
    finishes: dict[str, str] = field(default_factory=dict)  # completed reply -> its finish
    # Messages answered here -> the replies that answered them (id, finish, content), oldest
    # first: what a read still shows under a messageID the client posts again.
    answered: dict[str, list[tuple[str, str, bool]]] = field(default_factory=dict)
    tools: set[str] = field(default_factory=set)
    asks: set[str] = field(default_factory=set)
    rejected: bool = False
    retrying: bool = False
    deleted: bool = False


class Server:
    """Turns actions into events and facts; every action is valid in any state (or a no-op)."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.now = 0.0
        self.sessions: dict[str, _Session] = {}
        self._ids = itertools.count(1)

    # plumbing
    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def _emit(self, event: Event) -> None:
        self.s.events.append((self.now, event))

    def _fact(self, what: str, session: str, **kw: object) -> None:
        self.s.facts.append(Fact(self.now, what, session, **kw))  # type: ignore[arg-type]

    def session(self, index: int) -> _Session:
        """Sessions 0 and 1 exist from the start; 2 is a sub-agent of 0 once it was started."""
        sid = f"ses_{index}"
        if sid not in self.sessions:
            self.sessions[sid] = _Session(sid)
        return self.sessions[sid]

    # time
    def advance(self, dt: float) -> None:
        self.now += dt

    # actions
    def send(self, session: _Session) -> None:
        """A client posts a prompt (or a noReply message): stored at once (rule 1)."""
        if session.deleted:
            return
        message = self._id("msg")
        session.stored.append(message)
        session.created[message] = self.now
        self._emit(PromptAdmitted(session.id, message, created_at=SERVER_WALL + self.now))
        self._fact("arrive", session.id, messages=(message,))

    def resend(self, session: _Session) -> None:
        """A client posts the messageID of the latest answered message again, in an idle
        session (duplicate-message-id): OpenCode stores it anew, with a new time.created."""
        if session.deleted or session.loop or session.stored or not session.answered:
            return
        message = next(reversed(session.answered))
        if self.now <= session.created[message]:
            return  # the same time.created would be OpenCode repeating its stored message
        session.stored.append(message)
        session.created[message] = self.now
        self._emit(PromptAdmitted(session.id, message, created_at=SERVER_WALL + self.now))
        self._fact("arrive", session.id, messages=(message,))

    def repeat_reply(self, session: _Session) -> None:
        """OpenCode sends the completed reply to the latest answered message once more: late,
        after a re-send of that messageID when the client raced the loop's last events."""
        if session.deleted or not session.answered:
            return
        message, replies = next(reversed(session.answered.items()))
        if not replies:
            return
        reply, finish, _ = replies[-1]
        self._emit(ReplyFinished(session.id, reply, message, finish, None))

    def pickup(self, session: _Session) -> None:
        """The idle loop starts (a prompt without noReply turns the session busy): every stored
        message is in this iteration. A real prompt turns its session busy within milliseconds
        (1.2 s cold), so the loop starts only for a message stored less than PICKUP_WINDOW ago;
        one that waits longer is a noReply message, as the watcher must take it to be."""
        if session.deleted or session.loop or not session.stored:
            return
        if self.now - session.created[session.stored[-1]] >= PICKUP_WINDOW:
            return
        session.loop = True
        session.members = list(session.stored)
        self._emit(StatusChanged(session.id, SessionRun.BUSY))
        self._fact("pickup", session.id, messages=tuple(session.members))

    def open(self, session: _Session) -> None:
        """The loop opens an assistant message for the latest user message (rule 2, rule 4):
        messages stored since the iteration began are folded in."""
        if session.deleted or not session.loop or session.reply is not None or not session.stored:
            return
        latest = session.stored[-1]
        if latest in session.answered:
            # A repeated messageID: its reply is there already, so the loop ends at once, with
            # no reply and no LLM request (duplicate-message-id).
            self._idle(session, None)
            return
        new = [m for m in session.stored if m not in session.members]
        session.members += new
        session.reply, session.reply_parent = self._id("msg"), latest
        session.output = False
        session.rejected = False
        session.replies.append((session.reply, latest, False, False))
        self._emit(ReplyOpened(session.id, session.reply, latest, "fake", "fake-1"))
        if new:
            self._fact("pickup", session.id, messages=tuple(new))
        self._fact("activity", session.id)

    def say(self, session: _Session, content: bool) -> None:
        """The reply streams a delta (content) or a bookkeeping part (a step begins)."""
        if session.deleted or session.reply is None:
            return
        self._emit(
            ReplyActivity(session.id, session.reply, PartKind.CONTENT if content else PartKind.STEP)
        )
        if content:
            session.output = True
            self._mark_content(session)
        self._fact("output" if content else "activity", session.id)

    def tool(self, session: _Session, start: bool) -> None:
        """A tool part starts or finishes (content: the model called a tool)."""
        if session.deleted or session.reply is None:
            return
        if start:
            call = self._id("call")
            session.tools.add(call)
        elif session.tools:
            call = sorted(session.tools)[0]
            session.tools.discard(call)
        else:
            return
        self._emit(ToolProgress(session.id, session.reply, call, running=start))
        session.output = True
        self._mark_content(session)
        self._fact("tool_start" if start else "tool_end", session.id)

    def retry(self, session: _Session, begin: bool) -> None:
        """The provider failed: OpenCode waits to retry (fail-retry), then retries (busy)."""
        if session.deleted or not session.loop or session.output or begin == session.retrying:
            return
        session.retrying = begin
        if begin:
            self._emit(StatusChanged(session.id, SessionRun.RETRY, 1, "upstream exploded", None))
        else:
            self._emit(StatusChanged(session.id, SessionRun.BUSY))

    def finish(self, session: _Session, how: str) -> None:
        """The open reply completes: "stop" answers the iteration, "tool-calls" ends a step (the
        next step opens for the latest message), an error fails it (rule 3)."""
        if session.deleted or session.reply is None or session.asks:
            return
        reply, parent = session.reply, session.reply_parent
        assert parent is not None
        finish = {"stop": "stop", "step": "tool-calls", "error": None}[how]
        error = "APIError" if how == "error" else None
        self._emit(
            ReplyFinished(
                session.id, reply, parent, finish, error, "the provider said no" if error else None
            )
        )
        session.replies = [(r, p, r == reply or d, c) for r, p, d, c in session.replies]
        session.finishes[reply] = finish or "error"
        session.reply = None
        session.tools.clear()
        if how == "step":
            # The tracker reads a finished step as output (the model called a tool).
            self._fact("step_end", session.id)
            if session.rejected:
                self._idle(session, "rejected")
            return
        self._end_iteration(session, "answered" if how == "stop" else "failed")

    def ask(self, session: _Session) -> None:
        """A tool asks a person for permission (permission.asked); the loop waits."""
        if session.deleted or session.reply is None or session.asks:
            return
        request = self._id("per")
        session.asks.add(request)
        self._emit(HumanAsked(session.id, request))
        self._fact("ask", session.id, request=request)

    def answer(self, session: _Session, reject: bool) -> None:
        """The person answers; a reject ends the turn once the step has ended (rule 13)."""
        if session.deleted or not session.asks:
            return
        request = session.asks.pop()
        self._emit(HumanAnswered(session.id, request, rejected=reject))
        self._fact("answer", session.id, request=request)
        session.rejected = session.rejected or reject  # a no holds for the rest of the step

    def error(self, session: _Session, aborted: bool) -> None:
        """`session.error`: the user aborts (abort), or the prompt fails (unknown-model); idle."""
        if session.deleted or not session.loop or session.asks:
            return
        name = "MessageAbortedError" if aborted else "UnknownError"
        self._emit(SessionFailed(session.id, name, "Aborted" if aborted else "it broke"))
        self._fact("error", session.id, outcome="aborted" if aborted else "failed")
        if session.reply is not None:
            reply, parent = session.reply, session.reply_parent
            assert parent is not None
            session.replies = [(r, p, r == reply or d, c) for r, p, d, c in session.replies]
            session.reply = None
        self._end_iteration(session, "aborted" if aborted else "failed", go_on=False)

    def lose(self, session: _Session) -> None:
        """OpenCode stops without answering (#46842, a dropped prompt): idle (rule 7).

        Not after a person said no in the running step: OpenCode then ends the step and the
        loop (rule 13), so the idle that follows is the rejection's end, never a drop.
        """
        if session.deleted or session.asks or session.rejected:
            return
        self._idle(session, None)

    def delete(self, session: _Session) -> None:
        """`DELETE /session/{id}`: only `session.deleted` (rule 12)."""
        if session.deleted:
            return
        session.deleted = True
        self._emit(SessionDeleted(session.id))
        self._fact("delete", session.id)

    def spawn_child(self, parent: _Session) -> _Session | None:
        """The parent's reply runs a `task` tool: a sub-agent session is created."""
        child_id = "ses_2"
        if parent.deleted or parent.reply is None or not parent.output or child_id in self.sessions:
            return None
        self.tool(parent, start=True)
        child = self.sessions[child_id] = _Session(child_id, parent=parent.id)
        self._emit(SessionSeen(child_id, parent_session_id=parent.id))
        self._fact("child", child_id, parent=parent.id)
        return child

    def read(self, session: _Session, *, unknown: bool) -> SessionSnapshot | None:
        """A reconnect's REST read of the session, exact as of now (``unknown``: every read
        failed, which must change nothing)."""
        if session.deleted:
            return None
        if unknown:
            return SessionSnapshot(session.id, None, self.now, prompts=None, waiting_on=None)
        run = (
            SessionRun.RETRY
            if session.retrying
            else (SessionRun.BUSY if session.loop else SessionRun.IDLE)
        )
        prompts = tuple(
            PromptSnapshot(
                m,
                SERVER_WALL + session.created[m],
                tuple(
                    ReplySnapshot(r, completed=True, finish=f, error=None, has_content=c)
                    for r, f, c in session.answered.get(m, ())
                )
                + tuple(
                    ReplySnapshot(r, completed=d, finish=None, error=None, has_content=c)
                    for r, p, d, c in session.replies
                    if p == m and not d
                ),
            )
            for m in session.stored
        )
        return SessionSnapshot(
            session.id, run, self.now, prompts=prompts, waiting_on=tuple(session.asks)
        )

    # internals
    def _mark_content(self, session: _Session) -> None:
        session.replies = [(r, p, d, c or r == session.reply) for r, p, d, c in session.replies]

    def _end_iteration(self, session: _Session, outcome: str, *, go_on: bool = True) -> None:
        ended = tuple(session.members)
        self._fact("turn_end", session.id, messages=ended, outcome=outcome)
        if outcome == "answered":
            for m in ended:
                session.answered.pop(m, None)  # now the newest answered
                session.answered[m] = [
                    (r, session.finishes[r], c) for r, p, d, c in session.replies if p == m and d
                ]
        session.stored = [m for m in session.stored if m not in ended]
        session.members = []
        session.tools.clear()
        session.output = False
        session.retrying = False
        session.replies = [x for x in session.replies if x[1] in session.stored]
        if go_on and session.stored:
            # The loop goes on to the latest user message (two-prompts-queued-while-busy): busy
            # again, no idle in between, and this iteration holds every message stored so far.
            session.members = list(session.stored)
            self._emit(StatusChanged(session.id, SessionRun.BUSY))
            self._fact("pickup", session.id, messages=tuple(session.members))
        else:
            self._idle(session, None)

    def _idle(self, session: _Session, outcome: str | None) -> None:
        if outcome == "rejected":
            self._fact("turn_end", session.id, messages=tuple(session.members), outcome="rejected")
            session.stored = [m for m in session.stored if m not in session.members]
        session.loop = False
        session.members = []
        session.reply = None
        session.tools.clear()
        session.output = False
        session.retrying = False
        session.rejected = False
        session.asks.clear()
        session.replies = []
        self._emit(StatusChanged(session.id, SessionRun.IDLE))
        self._fact("idle", session.id, messages=tuple(session.stored))
        session.stored = []


# Each action with its weight: prompts, pick-ups and replies are the common life.
ACTIONS = (
    ("send", 6), ("pickup", 3), ("open", 3), ("say", 3), ("step", 1), ("tool_start", 1),
    ("tool_end", 1), ("retry", 1), ("busy", 1), ("stop", 3), ("step_end", 1), ("fail_reply", 1),
    ("ask", 1), ("answer", 1), ("reject", 1), ("abort", 1), ("fail", 1), ("lose", 1),
    ("delete", 1), ("child", 1), ("snapshot", 1), ("unknown_snapshot", 1), ("stale_snapshot", 1),
    ("wall_step", 1), ("exchange", 2), ("resend", 2), ("repeat_reply", 2),
)  # fmt: skip
_WEIGHTED = tuple(name for name, weight in ACTIONS for _ in range(weight))


@st.composite
def scenarios(draw: st.DrawFn, max_actions: int = 60) -> Scenario:
    """A random life of up to three sessions (one a sub-agent), with time passing between."""
    scenario = Scenario()
    server = Server(scenario)
    stale: list[SessionSnapshot] = []
    for _ in range(draw(st.integers(1, max_actions))):
        # Steps that floats hold exactly, so that "a second later" is a second to the bit.
        server.advance(draw(st.sampled_from([0.0, 2**-10, 0.25, 0.5, 1.0, 2.0, 3.0, 6.0, 20.0])))
        action = draw(st.sampled_from(_WEIGHTED))
        index = draw(st.integers(0, 2))
        if index == 2 and "ses_2" not in server.sessions:
            index = 0
        session = server.session(index)
        match action:
            case "send":
                server.send(session)
            case "pickup":
                server.pickup(session)
            case "open":
                server.open(session)
            case "say":
                server.say(session, content=True)
            case "step":
                server.say(session, content=False)
            case "tool_start" | "tool_end":
                server.tool(session, start=action == "tool_start")
            case "retry" | "busy":
                server.retry(session, begin=action == "retry")
            case "stop":
                server.finish(session, "stop")
            case "step_end":
                server.finish(session, "step")
            case "fail_reply":
                server.finish(session, "error")
            case "ask":
                server.ask(session)
            case "answer" | "reject":
                server.answer(session, reject=action == "reject")
            case "abort" | "fail":
                server.error(session, aborted=action == "abort")
            case "lose":
                server.lose(session)
            case "exchange":
                # A whole answered exchange at one instant, so that lives with answered prompts
                # (what a repeated messageID needs) are common, not one in a hundred.
                server.send(session)
                server.pickup(session)
                server.open(session)
                server.say(session, content=True)
                server.finish(session, "stop")
            case "resend":
                server.resend(session)
            case "repeat_reply":
                server.repeat_reply(session)
            case "delete":
                server.delete(session)
            case "child":
                server.spawn_child(server.session(0))
            case "snapshot" | "unknown_snapshot":
                read = server.read(session, unknown=action == "unknown_snapshot")
                if read is not None:
                    _feed_snapshot(scenario, server.now, read)
            case "stale_snapshot":
                # Read now, fed a while later, after whatever the stream says meanwhile.
                read = server.read(session, unknown=False)
                if read is not None:
                    stale.append(read)
            case "wall_step":
                scenario.wall_steps.append(
                    (server.now, draw(st.sampled_from([3600.0, -3600.0, 30.0])))
                )
        # A stale read is fed at the next action (some events later).
        if stale and action != "stale_snapshot":
            for read in stale:
                _feed_snapshot(scenario, server.now, read)
            stale.clear()
    scenario.end = server.now + 10_000.0
    return scenario


def _feed_snapshot(scenario: Scenario, now: float, event: SessionSnapshot) -> None:
    """Feed a read at ``now``. An idle read that is still the newest word on its session
    (nothing was said of it at or after the moment it was read) is a fact the judge needs: it
    ends messages that waited over a second for a turn."""
    spoke = any(
        getattr(e, "session_id", None) == event.session_id and t >= event.taken_at
        for t, e in scenario.events
        if not isinstance(e, SessionSnapshot)  # reads are not the stream's word
    )
    scenario.events.append((now, event))
    if event.run is SessionRun.IDLE and not spoke:
        scenario.facts.append(Fact(now, "snapshot_idle", event.session_id, taken=event.taken_at))


def _short(event: Event) -> str:
    fields = ", ".join(
        f"{k}={v}"
        for k, v in vars_of(event).items()
        if v not in (None, (), False) and k != "origin"
    )
    return f"{type(event).__name__}({fields})"


def vars_of(event: Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in event.__slots__}
