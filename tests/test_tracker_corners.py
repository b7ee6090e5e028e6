"""The corners where a prompt used to get the wrong verdict, one test each (each fails on the
tracker before it had stored phases)."""

from __future__ import annotations

import pytest

from tests.test_tracker import kinds
from watchdog.core.events import (
    HumanAnswered,
    HumanAsked,
    PartKind,
    PromptAdmitted,
    PromptSnapshot,
    ReplyActivity,
    ReplyFinished,
    ReplyOpened,
    ReplySnapshot,
    SessionFailed,
    SessionRun,
    SessionSeen,
    SessionSnapshot,
    StatusChanged,
)
from watchdog.core.settings import Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Completed, Outcome, PromptState, Resolved, Stalled, StallKind
from watchdog.opencode.v1 import decode_line

T = Timeouts(first_response=5.0, inactivity=5.0, tool=60.0, turn_start=30.0)


def busy(tracker: Tracker, at: float, session: str = "ses_a") -> None:
    tracker.feed(StatusChanged(session, SessionRun.BUSY), at)


def admit(tracker: Tracker, at: float, msg: str, session: str = "ses_a") -> None:
    tracker.feed(PromptAdmitted(session, msg, created_at=at), at)


def output(tracker: Tracker, at: float, reply: str, session: str = "ses_a") -> None:
    tracker.feed(ReplyActivity(session, reply, PartKind.CONTENT), at)


def slow_reply_with_queued_prompts(tracker: Tracker, queued: int, session: str = "ses_a") -> float:
    """A reply streams for 8 s while ``queued`` prompts arrive behind it, then ends; OpenCode
    then opens one reply for the latest of them (rule 14). Returns when that reply opened."""
    admit(tracker, 0.0, f"{session}_u0", session)
    busy(tracker, 0.0, session)
    tracker.feed(ReplyOpened(session, f"{session}_a0", f"{session}_u0"), 0.01)
    for second in range(1, 9):
        output(tracker, float(second), f"{session}_a0", session)
        if second <= queued:
            admit(tracker, second + 0.3, f"{session}_u{second}", session)
    for n in range(9, queued + 1):
        admit(tracker, 8.5, f"{session}_u{n}", session)
    finished = ReplyFinished(session, f"{session}_a0", f"{session}_u0", "stop", None)
    assert kinds(tracker.feed(finished, 9.0)) == ["completed:answered"]
    busy(tracker, 9.001, session)
    tracker.feed(ReplyOpened(session, f"{session}_a1", f"{session}_u{queued}"), 9.01)
    return 9.01


# -- item 1: queued prompts folded into one reply -----------------------------------------------


def test_every_queued_prompt_folded_into_a_hanging_reply_fires_its_own_no_response() -> None:
    """Four prompts queued behind a slow reply, answered by one reply that hangs: each of the four
    fires no_response, timed from the turn that began when the slow reply ended, not before."""
    tracker = Tracker("t", T)
    slow_reply_with_queued_prompts(tracker, 4)
    assert [p.state for p in tracker.pending(9.5)] == [PromptState.WAITING] * 4
    assert tracker.tick(13.9) == []  # 5 s after the turn began, not after acceptance
    fired = tracker.tick(14.0)
    assert [(t.prompt.message_id, t.kind) for t in fired if isinstance(t, Stalled)] == [
        (f"ses_a_u{n}", StallKind.NO_RESPONSE) for n in range(1, 5)
    ]
    assert all(isinstance(t, Stalled) and t.at == 14.0 for t in fired)


def test_an_abort_of_the_folded_reply_resolves_every_one_of_its_prompts() -> None:
    """After the four stalled, the user aborts: all four resolve and end aborted."""
    tracker = Tracker("t", T)
    slow_reply_with_queued_prompts(tracker, 4)
    tracker.tick(14.0)
    out = tracker.feed(SessionFailed("ses_a", "MessageAbortedError", "Aborted"), 20.0)
    assert sorted(t.prompt.message_id or "" for t in out if isinstance(t, Resolved)) == [
        f"ses_a_u{n}" for n in range(1, 5)
    ]
    assert [t.outcome for t in out if isinstance(t, Completed)] == [Outcome.ABORTED] * 4
    assert tracker.pending_count == 0


def test_the_folded_reply_answers_each_of_its_prompts() -> None:
    """When the shared reply comes, each folded prompt gets its first response and is answered."""
    tracker = Tracker("t", T)
    slow_reply_with_queued_prompts(tracker, 3)
    out = tracker.feed(ReplyActivity("ses_a", "ses_a_a1", PartKind.CONTENT), 10.0)
    out += tracker.feed(ReplyFinished("ses_a", "ses_a_a1", "ses_a_u3", "stop", None), 11.0)
    assert kinds(out) == ["first_response"] * 3 + ["completed:answered"] * 3


def test_ten_thousand_queued_prompts_that_all_hang_all_fire() -> None:
    """At scale: 200 sessions, each a slow reply with 49 prompts queued behind it, each session's
    shared reply then hangs: 9 800 no_response stalls, one for every queued prompt."""
    tracker = Tracker("t", T)
    for s in range(200):
        slow_reply_with_queued_prompts(tracker, 49, session=f"ses_{s}")
    assert tracker.pending_count == 200 * 49
    fired = []
    while (deadline := tracker.next_deadline()) is not None:
        fired += tracker.tick(deadline)
    stalls = [t for t in fired if isinstance(t, Stalled) and t.kind is StallKind.NO_RESPONSE]
    assert len(stalls) == 9_800
    assert len({t.prompt.message_id for t in stalls}) == 9_800


# -- item 2: a stale snapshot -------------------------------------------------------------------


def test_a_snapshot_read_before_a_permission_was_asked_does_not_end_the_wait() -> None:
    """A REST read begun at 1.5 says busy and nobody asked; `permission.asked` came at 2 on the
    stream; the read is fed at 3. The stream is newer: the prompt stays blocked, no alarm."""
    tracker = Tracker("t", T)
    admit(tracker, 0.0, "msg_u")
    busy(tracker, 0.0)
    tracker.feed(HumanAsked("ses_a", "per_1"), 2.0)
    snapshot = SessionSnapshot(
        "ses_a", SessionRun.BUSY, taken_at=1.5, prompts=(PromptSnapshot("msg_u", 0.0),)
    )
    tracker.feed(snapshot, 3.0)
    assert [p.state for p in tracker.pending(3.0)] == [PromptState.BLOCKED]
    assert tracker.tick(500.0) == []


def test_a_snapshot_read_after_the_stream_spoke_still_counts() -> None:
    """The same read begun after the last stream event is the newest word: it ends the wait."""
    tracker = Tracker("t", T)
    admit(tracker, 0.0, "msg_u")
    busy(tracker, 0.0)
    tracker.feed(HumanAsked("ses_a", "per_1"), 2.0)
    snapshot = SessionSnapshot("ses_a", SessionRun.BUSY, taken_at=2.5, waiting_on=())
    tracker.feed(snapshot, 3.0)
    assert [p.state for p in tracker.pending(3.0)] == [PromptState.WAITING]


# -- item 3: a sub-agent's permission -----------------------------------------------------------


def test_a_sub_agents_wait_ends_for_the_parent_when_the_sub_agent_goes_idle() -> None:
    """The child asks a person, then goes idle (its answer never seen): the parent's timers run
    again, so a parent that then hangs still stalls."""
    tracker = Tracker("t", T)
    admit(tracker, 0.0, "msg_p", session="ses_parent")
    busy(tracker, 0.0, "ses_parent")
    tracker.feed(SessionSeen("ses_child", parent_session_id="ses_parent"), 0.5)
    tracker.feed(HumanAsked("ses_child", "per_1"), 1.0)
    assert [p.state for p in tracker.pending(1.0)] == [PromptState.BLOCKED]
    tracker.feed(StatusChanged("ses_child", SessionRun.IDLE), 50.0)
    assert [p.state for p in tracker.pending(50.0)] == [PromptState.WAITING]
    # One second had run before the wait; four remain.
    assert kinds(tracker.tick(54.0)) == ["stalled:no_response"]


def test_a_sub_agents_answer_ends_the_parents_wait() -> None:
    """The answer arrives for the child: the parent goes on too."""
    tracker = Tracker("t", T)
    admit(tracker, 0.0, "msg_p", session="ses_parent")
    busy(tracker, 0.0, "ses_parent")
    tracker.feed(SessionSeen("ses_child", parent_session_id="ses_parent"), 0.5)
    tracker.feed(HumanAsked("ses_child", "per_1"), 1.0)
    tracker.feed(HumanAnswered("ses_child", "per_1"), 30.0)
    assert [p.state for p in tracker.pending(30.0)] == [PromptState.WAITING]


# -- item 4: a wait for a person pauses folded prompts too ---------------------------------------


def test_after_a_long_wait_for_a_person_a_folded_prompt_does_not_fire_at_once() -> None:
    """U1 and U2 folded into one reply; a person is asked for 10 minutes; after the answer each
    has its own remaining wait, not an instant no_response."""
    tracker = Tracker("t", T)
    admit(tracker, 0.0, "msg_u1")
    admit(tracker, 0.2, "msg_u2")
    busy(tracker, 0.3)
    tracker.feed(ReplyOpened("ses_a", "msg_a", "msg_u2"), 0.4)
    tracker.feed(HumanAsked("ses_a", "per_1"), 1.0)
    tracker.feed(HumanAnswered("ses_a", "per_1"), 600.0)
    assert tracker.tick(600.5) == []
    assert tracker.next_deadline() == pytest.approx(604.3)


def test_a_wait_for_a_person_asked_at_clock_zero_still_pauses_the_clock() -> None:
    """The monotonic clock may read 0.0 (the model test's does): a wait that began then is a
    wait like any other, not "no wait" (``blocked_since or now`` took 0.0 for none)."""
    tracker = Tracker("t", T)
    admit(tracker, 0.0, "msg_u1")
    busy(tracker, 0.0)
    tracker.feed(ReplyOpened("ses_a", "msg_a", "msg_u1"), 0.0)
    tracker.feed(HumanAsked("ses_a", "per_1"), 0.0)
    tracker.feed(HumanAnswered("ses_a", "per_1"), 3.0)
    assert tracker.next_deadline() == pytest.approx(8.0)
    assert tracker.tick(7.5) == []


# -- item 5: replies are forgotten with their prompts -------------------------------------------


def test_the_replies_of_folded_prompts_are_forgotten_when_they_end() -> None:
    """Memory is proportional to pending work: once the folded turn ends, none of its replies
    (steps of a multi-step reply included) are remembered."""
    tracker = Tracker("t", T)
    for round_ in range(50):
        admit(tracker, round_ * 10.0, f"msg_{round_}_1")
        admit(tracker, round_ * 10.0 + 0.1, f"msg_{round_}_2")
        busy(tracker, round_ * 10.0 + 0.2)
        step = ReplyOpened("ses_a", f"msg_{round_}_a1", f"msg_{round_}_2")
        tracker.feed(step, round_ * 10.0 + 0.3)
        tracker.feed(
            ReplyFinished("ses_a", f"msg_{round_}_a1", f"msg_{round_}_2", "tool-calls", None),
            round_ * 10.0 + 1,
        )
        tracker.feed(ReplyOpened("ses_a", f"msg_{round_}_a2", f"msg_{round_}_2"), round_ * 10 + 2)
        tracker.feed(
            ReplyFinished("ses_a", f"msg_{round_}_a2", f"msg_{round_}_2", "stop", None),
            round_ * 10.0 + 3,
        )
    assert tracker.pending_count == 0
    assert tracker._reply_turn == {}


# -- item 6: a time that is no time -------------------------------------------------------------


@pytest.mark.parametrize("created", ["1e300", "1e400", "-1e300", "99999999999999999999"])
def test_a_prompt_whose_time_is_no_usable_time_is_tracked_from_its_arrival(created: str) -> None:
    """The prompt is not lost: it stalls like any other, timed from when it arrived."""
    line = (
        '{"type":"message.updated","properties":{"info":{"role":"user","sessionID":"ses_a",'
        f'"id":"msg_u","time":{{"created":{created}}}}}}}}}'
    )
    decoded = decode_line(line, directory_scoped=True)
    assert decoded is not None
    tracker = Tracker("t", T)
    tracker.feed(decoded.event, 100.0)
    busy(tracker, 100.0)
    assert tracker.unusable_times == 1
    (pending,) = tracker.pending(100.0)
    assert pending.ref.accepted_at == 100.0
    assert kinds(tracker.tick(105.0)) == ["stalled:no_response"]


# -- item 7: deadlines on the monotonic clock ---------------------------------------------------


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_wall_clock_step_moves_no_deadline(step: float) -> None:
    """The wall clock jumps an hour (NTP after a suspend, a VM resume) while the monotonic clock
    runs on: the stall fires 60 s after the turn began, saying it waited 60 s."""
    tracker = Tracker("t", Timeouts(first_response=60.0))
    wall0 = 1_800_000_000.0
    tracker.feed(PromptAdmitted("ses_a", "msg_u", created_at=wall0), 10.0, wall0)
    tracker.feed(StatusChanged("ses_a", SessionRun.BUSY), 10.0, wall0)
    # Three seconds later the wall clock steps.
    assert tracker.tick(13.0, wall0 + 3.0 + step) == []
    assert tracker.next_deadline() == 70.0
    assert tracker.tick(69.9, wall0 + 59.9 + step) == []
    (stall,) = tracker.tick(70.0, wall0 + 60.0 + step)
    assert isinstance(stall, Stalled)
    assert stall.waited == 60.0
    assert stall.prompt.accepted_at == wall0  # what people read: the wall time it was accepted


def test_a_wall_clock_step_does_not_age_a_prompt_that_arrives_after_it() -> None:
    """A prompt stamped by the server in the old time, seen after our wall clock stepped: its
    monotonic time comes from the server clock's offset, learnt before the step."""
    tracker = Tracker("t", Timeouts(first_response=60.0))
    wall0 = 1_800_000_000.0
    tracker.observe_clock(wall0, 10.0, wall0 + 0.01)  # a heartbeat: 10 ms delivery
    step = 3600.0
    tracker.feed(
        PromptAdmitted("ses_a", "msg_u", created_at=wall0 + 20.0), 30.01, wall0 + 20.01 + step
    )
    (pending,) = tracker.pending(30.01)
    assert pending.age == pytest.approx(0.0, abs=0.02)


# -- item 8: a repeated messageID and the reply of the message it repeats -----------------------


def answered_then_sent_again(tracker: Tracker) -> None:
    """`msg_u` is answered by `msg_a` (from 0 to 2); at 2.5 the client posts the same messageID
    again (duplicate-message-id: a new time.created) and OpenCode turns busy for it."""
    admit(tracker, 0.0, "msg_u")
    busy(tracker, 0.0)
    tracker.feed(ReplyOpened("ses_a", "msg_a", "msg_u"), 0.5)
    output(tracker, 1.0, "msg_a")
    finished = ReplyFinished("ses_a", "msg_a", "msg_u", "stop", None)
    assert kinds(tracker.feed(finished, 2.0)) == ["completed:answered"]
    assert kinds(tracker.feed(PromptAdmitted("ses_a", "msg_u", created_at=2.5), 2.5)) == [
        "accepted"
    ]
    busy(tracker, 2.6)


def test_a_late_repeat_of_the_old_reply_does_not_answer_the_repeated_message_id() -> None:
    """OpenCode sends a completed assistant message twice; when the client re-sent the messageID
    between the two (it saw the reply over REST), the repeat is the old reply's, not an answer:
    the session goes idle and the re-sent prompt is dropped, as with no repeat at all."""
    tracker = Tracker("t", T)
    answered_then_sent_again(tracker)
    repeat = ReplyFinished("ses_a", "msg_a", "msg_u", "stop", None)
    assert tracker.feed(repeat, 2.7) == []
    assert kinds(tracker.feed(StatusChanged("ses_a", SessionRun.IDLE), 2.8)) == [
        "stalled:dropped",
        "completed:dropped",
    ]


@pytest.mark.parametrize("taken_at", [1.9, 2.55, 2.65])
def test_a_read_showing_the_old_reply_does_not_answer_the_repeated_message_id(
    taken_at: float,
) -> None:
    """A reconcile's REST read (begun before the re-send or after it) shows the user message with
    its only reply, the old one, completed (rest/session-messages-duplicate-message-id.json):
    that answers the first sending, not the second; the idle that follows drops it."""
    tracker = Tracker("t", T)
    answered_then_sent_again(tracker)
    old = ReplySnapshot("msg_a", completed=True, finish="stop", error=None, has_content=True)
    read = SessionSnapshot(
        "ses_a", SessionRun.BUSY, taken_at, prompts=(PromptSnapshot("msg_u", 2.5, (old,)),)
    )
    assert tracker.feed(read, 2.7) == []
    assert tracker.pending_count == 1
    assert kinds(tracker.feed(StatusChanged("ses_a", SessionRun.IDLE), 2.8)) == [
        "stalled:dropped",
        "completed:dropped",
    ]


def test_a_new_reply_to_the_repeated_message_id_still_answers_it() -> None:
    """Only the old reply is history: were OpenCode to answer the re-sent message with a new
    assistant message, that answers it (and a read showing both does too)."""
    tracker = Tracker("t", T)
    answered_then_sent_again(tracker)
    tracker.feed(ReplyOpened("ses_a", "msg_b", "msg_u"), 3.0)
    both = (
        ReplySnapshot("msg_a", completed=True, finish="stop", error=None, has_content=True),
        ReplySnapshot("msg_b", completed=True, finish="stop", error=None, has_content=True),
    )
    read = SessionSnapshot(
        "ses_a", SessionRun.BUSY, 3.5, prompts=(PromptSnapshot("msg_u", 2.5, both),)
    )
    assert kinds(tracker.feed(read, 3.6)) == ["first_response", "completed:answered"]
