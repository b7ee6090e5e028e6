"""The life of one prompt as data: its phases, what can happen to it, and the table of transitions.

The tracker turns OpenCode's events into ``Signal``s for each prompt they concern and looks the
pair (phase, signal) up in ``TABLE``; the ``Rule`` found says what to do and which phase (or
ending) comes next. A pair missing from ``TABLE`` is in ``IGNORED`` with the reason it changes
nothing; a test checks that every pair is in exactly one of them, and that ``diagram()`` (which is
what the tracker's docstring shows) is made from this table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from watchdog.core.transitions import Outcome, StallKind


class Phase(enum.StrEnum):
    """Where a pending prompt stands."""

    AWAITING_TURN = (
        "awaiting_turn"  # stored in an idle session; a real prompt turns it busy at once
    )
    QUEUED = "queued"  # stored behind an earlier prompt of its session; no clock runs for it yet
    WAITING = "waiting"  # its turn began; the model has said nothing yet (first-response clock)
    RETRYING = "retrying"  # waiting, while OpenCode retries the provider (the same clock runs on)
    REPLYING = "replying"  # the model answers (inactivity clock; the tool clock while a tool runs)
    # A person is asked (permission, question): no clock runs. Two phases, so that the answer
    # returns the prompt to where it was: before or after the model's first output.
    BLOCKED = "blocked"
    BLOCKED_REPLYING = "blocked_replying"


class Signal(enum.StrEnum):
    """What can happen to one prompt (the tracker derives these from OpenCode's events)."""

    TURN = "turn"  # its turn began: `busy`, the prompt ahead of it ended, or a reply opened for it
    BEHIND = "behind"  # a reply opened for an earlier prompt: this one waits for that turn to end
    OUTPUT = "output"  # its reply said something (text, reasoning, a tool call)
    STEP = "step"  # its reply did bookkeeping (a step began or ended): alive, but no answer
    RETRY = "retry"  # OpenCode waits to retry the provider
    BUSY = "busy"  # the retry began
    ASKED = "asked"  # a person is asked, in its session or in a sub-agent's
    ANSWERED = "answered"  # every question its session waited on was answered
    DUE = "due"  # its deadline passed
    LATER = "later"  # the next message came NO_TURN_GAP later, and its turn has still not begun
    FINISHED = "finished"  # its reply ended; the outcome comes with the signal
    ERROR = "error"  # `session.error` for the turn it is in; the outcome comes with the signal
    IDLE = "idle"  # its session's loop stopped
    LOST = "lost"  # its server restarted meanwhile and has no loop for it (a reconnect's read)
    REJECTED = "rejected"  # its session's loop stopped after a person said no
    DELETED = "deleted"  # its session was deleted
    EVICTED = "evicted"  # the watchdog lets go of it (a memory limit, its server removed)


class Action(enum.StrEnum):
    """What a rule does besides moving the prompt to its next phase."""

    START = "start the first-response clock"
    RESPOND = "first response: report it, resolve a no_response stall"
    RESOLVE = "resolve a firing stall"
    NOTE = "nothing else"
    PAUSE = "stop the clocks"
    RESUME = "the clocks moved on by the wait"
    REQUEUE = "stop the clock until its turn comes"
    FIRE = "report a stall"
    END = "end the prompt"


@dataclass(frozen=True, slots=True)
class Rule:
    """One transition: the action, then the next phase (None: stays, or as the action says).

    For ``END``, ``ending`` is the outcome and ``reason`` the reason reported with it; None takes
    them from the signal (a reply's own ending, the server's error, an eviction's cause).
    """

    action: Action
    next: Phase | None = None
    ending: Outcome | None = None
    reason: str | None = None
    stall: StallKind | None = None


P, S, A = Phase, Signal, Action
_NO_TURN = Rule(A.END, ending=Outcome.NO_REPLY, reason="no_turn_started")
_NEVER_ANSWERED = Rule(A.END, ending=Outcome.DROPPED, reason="idle_without_reply")
_CUT_SHORT = Rule(A.END, ending=Outcome.DROPPED, reason="idle_before_finish")
_ITS_OWN_END = Rule(A.END)  # outcome and reason from the signal
_REJECTED = Rule(A.END, ending=Outcome.ABORTED, reason="rejected")
_DELETED = Rule(A.END, ending=Outcome.ABORTED, reason="session_deleted")
_LOST = Rule(A.END, ending=Outcome.DROPPED, reason="server_restart")
_START = Rule(A.START, P.WAITING)
_RESPOND = Rule(A.RESPOND, P.REPLYING)
_PAUSE = Rule(A.PAUSE, P.BLOCKED)
_PAUSE_REPLY = Rule(A.PAUSE, P.BLOCKED_REPLYING)
_EVICTED = Rule(A.END, ending=Outcome.EVICTED)  # the reason comes with the signal
_ENDINGS = {
    S.FINISHED: _ITS_OWN_END,
    S.ERROR: _ITS_OWN_END,
    S.DELETED: _DELETED,
    S.EVICTED: _EVICTED,
}

# fmt: off
TABLE: dict[Phase, dict[Signal, Rule]] = {
    P.AWAITING_TURN: {S.TURN: _START, S.DUE: _NO_TURN, S.LATER: _NO_TURN, S.IDLE: _NO_TURN,
                      S.LOST: _NO_TURN, S.ERROR: _ITS_OWN_END, S.DELETED: _DELETED,
                      S.EVICTED: _EVICTED},
    P.QUEUED:        {S.TURN: _START, S.IDLE: _NEVER_ANSWERED, S.LOST: _LOST, S.DELETED: _DELETED,
                      S.EVICTED: _EVICTED},
    P.WAITING:       {S.OUTPUT: _RESPOND, S.RETRY: Rule(A.NOTE, P.RETRYING), S.ASKED: _PAUSE,
                      S.BEHIND: Rule(A.REQUEUE, P.QUEUED), S.IDLE: _NEVER_ANSWERED, S.LOST: _LOST,
                      S.REJECTED: _REJECTED, S.DUE: Rule(A.FIRE, stall=StallKind.NO_RESPONSE),
                      **_ENDINGS},
    P.RETRYING:      {S.OUTPUT: _RESPOND, S.BUSY: Rule(A.NOTE, P.WAITING), S.ASKED: _PAUSE,
                      S.BEHIND: Rule(A.REQUEUE, P.QUEUED), S.IDLE: _NEVER_ANSWERED, S.LOST: _LOST,
                      S.REJECTED: _REJECTED, S.DUE: Rule(A.FIRE, stall=StallKind.NO_RESPONSE),
                      **_ENDINGS},
    P.REPLYING:      {S.OUTPUT: Rule(A.RESOLVE), S.STEP: Rule(A.RESOLVE), S.ASKED: _PAUSE_REPLY,
                      S.IDLE: _CUT_SHORT, S.LOST: _LOST, S.REJECTED: _REJECTED,
                      S.DUE: Rule(A.FIRE, stall=StallKind.INACTIVE), **_ENDINGS},
    P.BLOCKED:       {S.ANSWERED: Rule(A.RESUME, P.WAITING), S.REJECTED: _REJECTED,
                      S.OUTPUT: Rule(A.RESPOND, P.BLOCKED_REPLYING), **_ENDINGS},
    P.BLOCKED_REPLYING: {S.ANSWERED: Rule(A.RESUME, P.REPLYING), S.REJECTED: _REJECTED,
                      S.OUTPUT: Rule(A.RESOLVE), S.STEP: Rule(A.RESOLVE), **_ENDINGS},
}
# fmt: on

_BUSY_IS_A_LEVEL = "busy is a level, re-sent at every loop step: the turn already began"
_NOT_IN_A_TURN = "only the prompts of a turn hear its reply, its error and its person's answer"
_NO_CLOCK = "no clock runs in this phase, so nothing comes due"
_PERSON_FIRST = "while a person is asked, the model and the loop wait for them"
_ITS_TURN_BEGAN = "its turn began, so it is no noReply message"
_NOT_ASKED = "it was not waiting for a person"
_IDLE_ENDS_WAITS = "an idle session first ends every wait for a person (ANSWERED)"
IGNORED: dict[tuple[Phase, Signal], str] = {
    **{
        (p, s): _NOT_IN_A_TURN
        for p in (P.AWAITING_TURN, P.QUEUED)
        for s in (S.OUTPUT, S.STEP, S.FINISHED, S.REJECTED, S.ASKED, S.ANSWERED)
    },
    (P.AWAITING_TURN, S.BEHIND): "its turn has not begun: there is no clock to stop",
    (P.AWAITING_TURN, S.RETRY): "a retry means the loop runs: the tracker gives it its turn first",
    (P.AWAITING_TURN, S.BUSY): "a busy gives it its turn (TURN), not a retry's end",
    (P.QUEUED, S.BEHIND): "it already waits for an earlier turn",
    (P.QUEUED, S.RETRY): "a retry is the running turn's, not this queued prompt's",
    (P.QUEUED, S.BUSY): _BUSY_IS_A_LEVEL,
    (P.QUEUED, S.DUE): _NO_CLOCK,
    (P.QUEUED, S.LATER): "it is queued behind a running turn, so it is no noReply message",
    (P.QUEUED, S.ERROR): "an error ends the running turn, not the prompts queued behind it",
    (P.WAITING, S.TURN): _BUSY_IS_A_LEVEL,
    (P.WAITING, S.STEP): "bookkeeping (a step begins) is no answer from the model",
    (P.WAITING, S.BUSY): _BUSY_IS_A_LEVEL,
    (P.WAITING, S.ANSWERED): _NOT_ASKED,
    (P.WAITING, S.LATER): _ITS_TURN_BEGAN,
    (P.RETRYING, S.TURN): _BUSY_IS_A_LEVEL,
    (P.RETRYING, S.STEP): "bookkeeping (a step begins) is no answer from the model",
    (P.RETRYING, S.RETRY): "the next attempt of the same retry (the status carries it)",
    (P.RETRYING, S.ANSWERED): _NOT_ASKED,
    (P.RETRYING, S.LATER): _ITS_TURN_BEGAN,
    (P.REPLYING, S.TURN): _BUSY_IS_A_LEVEL,
    (P.REPLYING, S.BEHIND): "its reply is under way; a reply for an earlier prompt cannot follow",
    (P.REPLYING, S.RETRY): "a retry after output is within the reply: the inactivity clock runs",
    (P.REPLYING, S.BUSY): _BUSY_IS_A_LEVEL,
    (P.REPLYING, S.ANSWERED): _NOT_ASKED,
    (P.REPLYING, S.LATER): _ITS_TURN_BEGAN,
    **{
        (p, s): why
        for p in (P.BLOCKED, P.BLOCKED_REPLYING)
        for s, why in {
            S.TURN: _PERSON_FIRST,
            S.BEHIND: _PERSON_FIRST,
            S.RETRY: _PERSON_FIRST,
            S.BUSY: _PERSON_FIRST,
            S.ASKED: "already waiting for a person",
            S.DUE: _NO_CLOCK,
            S.LATER: _ITS_TURN_BEGAN,
            S.IDLE: _IDLE_ENDS_WAITS,
            S.LOST: _IDLE_ENDS_WAITS,
        }.items()
    },
    (P.BLOCKED, S.STEP): "alive, but no answer; and no clock runs while a person is asked",
}


def rule(phase: Phase, signal: Signal) -> Rule | None:
    """The transition for ``signal`` in ``phase``; None for a pair that changes nothing."""
    return TABLE[phase].get(signal)


def diagram() -> str:
    """The table as a picture: per phase, which signals lead where (the tracker's docstring)."""
    lines = []
    for phase, rules in TABLE.items():
        targets: dict[str, list[str]] = {}
        for signal, r in rules.items():
            targets.setdefault(_target(phase, r), []).append(signal.value)
        for i, (target, signals) in enumerate(targets.items()):
            head = phase.value if i == 0 else ""
            lines.append(f"    {head:<14}{', '.join(signals)} ─► {target}")
    return "\n".join(lines)


def _target(phase: Phase, r: Rule) -> str:
    match r.action:
        case Action.END:
            ending = r.ending.value if r.ending else "the reply's or error's outcome"
            return f"{ending} ({r.reason})" if r.reason else ending
        case Action.FIRE:
            return f"stall {r.stall.value if r.stall else '?'}"
        case _:
            return (r.next or phase).value + ("" if r.next else f" ({r.action.value})")
