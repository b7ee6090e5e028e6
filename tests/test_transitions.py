"""Each transition of the table, driven through the tracker by the events that make its signal.

A case names the phase a prompt is brought to (a recipe of events), the events that follow,
and what the table says comes next: a phase (as the pending gauge shows it) or an ending.
"""

from __future__ import annotations

import pytest

from watchdog.core.events import (
    Event,
    HumanAnswered,
    HumanAsked,
    PartKind,
    PromptAdmitted,
    ReplyActivity,
    ReplyFinished,
    ReplyOpened,
    SessionDeleted,
    SessionFailed,
    SessionRun,
    StatusChanged,
)
from watchdog.core.phases import TABLE, Phase, Signal
from watchdog.core.settings import Limits, Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Completed, Outcome, PromptState, Stalled, StallKind

S = "ses_a"
T = Timeouts(first_response=5.0, inactivity=5.0, tool=60.0, turn_start=30.0)


def admitted(msg: str = "msg_p") -> list[Event]:
    return [PromptAdmitted(S, msg, created_at=0.0)]


BUSY = StatusChanged(S, SessionRun.BUSY)
IDLE = StatusChanged(S, SessionRun.IDLE)
RETRY = StatusChanged(S, SessionRun.RETRY, 1, "upstream exploded", None)
OPEN = ReplyOpened(S, "msg_r", "msg_p")
SAID = ReplyActivity(S, "msg_r", PartKind.CONTENT)
STEP = ReplyActivity(S, "msg_r", PartKind.STEP)
ASKED = HumanAsked(S, "per_1")
ANSWERED = HumanAnswered(S, "per_1")
REJECTED = HumanAnswered(S, "per_1", rejected=True)

# How to bring the prompt "msg_p" to each phase.
RECIPES: dict[Phase, list[Event]] = {
    Phase.AWAITING_TURN: admitted(),
    # An earlier prompt is in its turn with an open reply: msg_p queues behind it.
    Phase.QUEUED: [
        *admitted("msg_0"),
        BUSY,
        ReplyOpened(S, "msg_r0", "msg_0"),
        *admitted(),
    ],
    Phase.WAITING: [*admitted(), BUSY],
    Phase.RETRYING: [*admitted(), BUSY, RETRY],
    Phase.REPLYING: [*admitted(), BUSY, OPEN, SAID],
    Phase.BLOCKED: [*admitted(), BUSY, OPEN, ASKED],
    Phase.BLOCKED_REPLYING: [*admitted(), BUSY, OPEN, SAID, ASKED],
}
LEAD_ENDS = ReplyFinished(S, "msg_r0", "msg_0", "stop", None)

# (phase, signal): the events that make the signal for msg_p, and what follows.
Expected = PromptState | Outcome | StallKind
# ``then``: events (a number waits that many seconds), or "tick" (time passes), or "evict" (a
# prompt of another session arrives past the prompt limit).
Then = list[Event | float] | str
CASES: list[tuple[Phase, Signal, Then, Expected]] = [
    (Phase.AWAITING_TURN, Signal.TURN, [BUSY], PromptState.WAITING),
    (Phase.AWAITING_TURN, Signal.LATER, [2.0, PromptAdmitted(S, "msg_q", created_at=2.0)],
     Outcome.NO_REPLY),
    (Phase.AWAITING_TURN, Signal.IDLE, [IDLE], Outcome.NO_REPLY),
    (Phase.AWAITING_TURN, Signal.DUE, "tick", Outcome.NO_REPLY),
    (Phase.AWAITING_TURN, Signal.ERROR, [SessionFailed(S, "UnknownError", "x")], Outcome.FAILED),
    (Phase.AWAITING_TURN, Signal.DELETED, [SessionDeleted(S)], Outcome.ABORTED),
    (Phase.AWAITING_TURN, Signal.EVICTED, "evict", Outcome.EVICTED),
    (Phase.QUEUED, Signal.TURN, [LEAD_ENDS], PromptState.WAITING),
    (Phase.QUEUED, Signal.IDLE, [IDLE], Outcome.DROPPED),
    (Phase.QUEUED, Signal.DUE, "tick", PromptState.QUEUED),  # ignored: no clock runs
    (Phase.QUEUED, Signal.DELETED, [SessionDeleted(S)], Outcome.ABORTED),
    (Phase.WAITING, Signal.OUTPUT, [OPEN, SAID], PromptState.REPLYING),
    (Phase.WAITING, Signal.STEP, [OPEN, STEP], PromptState.WAITING),  # ignored: no answer
    (Phase.WAITING, Signal.RETRY, [RETRY], PromptState.RETRYING),
    (Phase.WAITING, Signal.ASKED, [ASKED], PromptState.BLOCKED),
    (Phase.WAITING, Signal.TURN, [BUSY], PromptState.WAITING),  # ignored: busy is a level
    (Phase.WAITING, Signal.DUE, "tick", StallKind.NO_RESPONSE),
    (Phase.WAITING, Signal.IDLE, [IDLE], Outcome.DROPPED),
    (Phase.WAITING, Signal.FINISHED, [OPEN, ReplyFinished(S, "msg_r", "msg_p", "stop", None)],
     Outcome.ANSWERED),
    (Phase.WAITING, Signal.ERROR, [SessionFailed(S, "MessageAbortedError")], Outcome.ABORTED),
    (Phase.RETRYING, Signal.BUSY, [BUSY], PromptState.WAITING),
    (Phase.RETRYING, Signal.OUTPUT, [OPEN, SAID], PromptState.REPLYING),
    (Phase.RETRYING, Signal.DUE, "tick", StallKind.NO_RESPONSE),
    (Phase.REPLYING, Signal.DUE, "tick", StallKind.INACTIVE),
    (Phase.REPLYING, Signal.ASKED, [ASKED], PromptState.BLOCKED),
    (Phase.REPLYING, Signal.RETRY, [RETRY], PromptState.REPLYING),  # ignored: within the reply
    (Phase.REPLYING, Signal.IDLE, [IDLE], Outcome.DROPPED),
    (Phase.REPLYING, Signal.FINISHED, [ReplyFinished(S, "msg_r", "msg_p", None, "APIError")],
     Outcome.FAILED),
    (Phase.BLOCKED, Signal.ANSWERED, [ANSWERED], PromptState.WAITING),
    (Phase.BLOCKED, Signal.OUTPUT, [SAID], PromptState.BLOCKED),  # now blocked_replying
    (Phase.BLOCKED, Signal.DUE, "tick", PromptState.BLOCKED),  # ignored: no clock
    (Phase.BLOCKED_REPLYING, Signal.ANSWERED, [ANSWERED], PromptState.REPLYING),
    (Phase.BLOCKED_REPLYING, Signal.REJECTED,
     [REJECTED, ReplyFinished(S, "msg_r", "msg_p", "tool-calls", None), IDLE], Outcome.ABORTED),
    (Phase.BLOCKED_REPLYING, Signal.DELETED, [SessionDeleted(S)], Outcome.ABORTED),
]  # fmt: skip


def run_case(phase: Phase, then: Then) -> tuple[Tracker, list[object]]:
    tracker = Tracker("t", T, Limits(sessions=100, prompts=1 if then == "evict" else 100))
    now = 0.0
    for event in RECIPES[phase]:
        now += 0.01
        tracker.feed(event, now)
    out: list[object] = []
    if then == "tick":
        out += tracker.tick(1_000.0)
    elif then == "evict":
        out += tracker.feed(PromptAdmitted("ses_other", "msg_x", created_at=now), now + 0.01)
    else:
        assert isinstance(then, list)
        for item in then:
            if isinstance(item, float):
                now += item
                continue
            now += 0.01
            out += tracker.feed(item, now)
    return tracker, out


def outcome_of(out: list[object], message: str = "msg_p") -> Outcome | None:
    return next(
        (t.outcome for t in out if isinstance(t, Completed) and t.prompt.message_id == message),
        None,
    )


@pytest.mark.parametrize("phase", list(RECIPES))
def test_each_recipe_reaches_its_phase(phase: Phase) -> None:
    """The cases below start from these phases."""
    tracker = Tracker("t", T)
    for i, event in enumerate(RECIPES[phase]):
        tracker.feed(event, 0.01 * (i + 1))
    state = {p.ref.message_id: p.state for p in tracker.pending(1.0)}["msg_p"]
    blocked = phase in (Phase.BLOCKED, Phase.BLOCKED_REPLYING)
    assert state is (PromptState.BLOCKED if blocked else PromptState(phase.value))


@pytest.mark.parametrize(
    ("phase", "signal", "then", "expected"),
    CASES,
    ids=[f"{p.value}-{s.value}" for p, s, _, _ in CASES],
)
def test_the_table_is_what_the_tracker_does(
    phase: Phase, signal: Signal, then: Then, expected: Expected
) -> None:
    """The events that make ``signal`` in ``phase`` lead where the table says."""
    tracker, out = run_case(phase, then)
    rule = TABLE[phase].get(signal)
    match expected:
        case Outcome():
            assert rule is not None
            assert outcome_of(out) is expected
        case StallKind():
            assert rule is not None
            assert rule.stall is expected
            assert [t.kind for t in out if isinstance(t, Stalled)] == [expected]
        case PromptState():
            state = {p.ref.message_id: p.state for p in tracker.pending(1.0)}.get("msg_p")
            assert state is expected
            if rule is None:  # an ignored pair: nothing happened to the prompt
                assert outcome_of(out) is None


def test_the_cases_start_from_every_phase() -> None:
    """Every phase has cases (the pairs not exercised here are in the table or IGNORED, which
    test_phases.py checks, and the model-based test drives them all)."""
    assert {p for p, _, _, _ in CASES} == set(Phase)
