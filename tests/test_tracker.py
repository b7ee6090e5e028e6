"""The tracker against the reference captures: each rule of "How to decide whether a prompt was answered"."""

from __future__ import annotations

import pytest

from tests.conftest import VERSIONS, capture, run
from watchdog.app.replay import replay
from watchdog.core.events import (
    Event,
    HumanAnswered,
    HumanAsked,
    PartKind,
    PromptAdmitted,
    ReplyActivity,
    ReplyFinished,
    ReplyOpened,
    SessionRun,
    SessionSeen,
    StatusChanged,
    ToolProgress,
)
from watchdog.core.settings import Limits, Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import (
    Accepted,
    Completed,
    FirstResponse,
    Outcome,
    PromptState,
    Resolved,
    Stalled,
    Transition,
)

SHORT = Timeouts(first_response=5.0, inactivity=5.0, tool=60.0)


def kinds(transitions: list[Transition]) -> list[str]:
    """A compact picture of what happened, e.g. ['accepted', 'stalled:no_response']."""
    names: list[str] = []
    for t in transitions:
        match t:
            case Accepted():
                names.append("accepted")
            case FirstResponse():
                names.append("first_response")
            case Stalled(kind=kind):
                names.append(f"stalled:{kind}")
            case Resolved(kind=kind):
                names.append(f"resolved:{kind}")
            case Completed(outcome=outcome):
                names.append(f"completed:{outcome}")
    return names


def completed(transitions: list[Transition]) -> list[Completed]:
    return [t for t in transitions if isinstance(t, Completed)]


@pytest.mark.parametrize("version", VERSIONS)
def test_normal_reply_is_answered_without_stall(version: str) -> None:
    """A prompt whose assistant finishes with "stop" is answered, and then forgotten."""
    tracker, out = run(version, "normal", SHORT, linger=60)
    assert kinds(out) == ["accepted", "first_response", "completed:answered"]
    assert tracker.pending_count == 0
    assert tracker.next_deadline() is None


@pytest.mark.parametrize("version", VERSIONS)
def test_assistant_placeholder_is_not_a_response(version: str) -> None:
    """Rule 2: the assistant message shell appears before the model says anything (hang)."""
    recording = capture(version, "hang")
    assert any(isinstance(r.event, ReplyOpened) for r in recording)
    busy = next(
        r.at
        for r in recording
        if isinstance(r.event, StatusChanged) and r.event.run is SessionRun.BUSY
    )
    tracker = Tracker("test", SHORT)
    happened = replay(tracker, recording, until=recording[-1].at)
    out = [t for _, t in happened]
    assert kinds(out) == ["accepted", "stalled:no_response"]
    accepted = out[0]
    stall = out[1]
    assert isinstance(accepted, Accepted)
    assert isinstance(stall, Stalled)
    # The clock starts with the prompt's turn (its `busy`), milliseconds after its acceptance.
    assert stall.at == busy + SHORT.first_response
    assert stall.waited == pytest.approx(busy - accepted.at + SHORT.first_response)


@pytest.mark.parametrize("version", VERSIONS)
def test_silence_mid_reply_is_inactive(version: str) -> None:
    """hang-mid: three tokens, then nothing; the inactivity timer runs from the last delta."""
    recording = capture(version, "hang-mid")
    last_delta = max(
        r.at
        for r in recording
        if isinstance(r.event, ReplyActivity) and r.event.kind is PartKind.CONTENT
    )
    tracker = Tracker("test", SHORT)
    out = [t for _, t in replay(tracker, recording, until=recording[-1].at)]
    assert kinds(out) == ["accepted", "first_response", "stalled:inactive"]
    assert out[-1].at == pytest.approx(last_delta + SHORT.inactivity)
    assert tracker.pending(out[-1].at)[0].state is PromptState.STALLED


@pytest.mark.parametrize("version", VERSIONS)
def test_slow_steady_reply_does_not_stall(version: str) -> None:
    """One token a second for 8 s never trips a 5 s inactivity timeout."""
    _, out = run(version, "slow", SHORT)
    assert kinds(out) == ["accepted", "first_response", "completed:answered"]


@pytest.mark.parametrize("version", VERSIONS)
def test_tool_calls_finish_is_an_intermediate_step(version: str) -> None:
    """Rule 3: finish "tool-calls" ends a step, not the prompt; the next assistant answers it."""
    recording = capture(version, "permission")
    finishes = [r.event.finish for r in recording if isinstance(r.event, ReplyFinished)]
    assert "tool-calls" in finishes
    _, out = run(version, "permission")
    assert kinds(out) == ["accepted", "first_response", "completed:answered"]


@pytest.mark.parametrize("version", VERSIONS)
def test_permission_wait_pauses_the_timers(version: str) -> None:
    """A prompt waiting on a permission is blocked: a wait longer than every timeout is no stall."""
    recording = capture(version, "permission")
    asked = next(r.at for r in recording if isinstance(r.event, HumanAsked))
    answered = next(r.at for r in recording if isinstance(r.event, HumanAnswered))
    timeouts = Timeouts(first_response=1.0, inactivity=1.0, tool=1.0)
    assert answered - asked > 3 * timeouts.tool
    tracker = Tracker("test", timeouts)
    before = [r for r in recording if r.at <= asked]
    replay(tracker, before)
    assert [p.state for p in tracker.pending(asked + 1)] == [PromptState.BLOCKED]
    assert tracker.next_deadline() is None
    out = [t for _, t in replay(tracker, [r for r in recording if r.at > asked])]
    assert kinds(out) == ["completed:answered"]


@pytest.mark.parametrize("version", VERSIONS)
def test_completed_without_finish_or_error_is_aborted(version: str) -> None:
    """Rule 3: an abort during a retry wait completes the assistant with neither finish nor error."""
    _, out = run(version, "fail-retry", SHORT)
    assert kinds(out) == [
        "accepted",
        "stalled:no_response",
        "resolved:no_response",
        "completed:aborted",
    ]
    assert completed(out)[0].reason == "completed_without_finish"


@pytest.mark.parametrize("version", VERSIONS)
def test_retrying_prompt_counts_toward_no_response_and_says_why(version: str) -> None:
    """Provider retries keep the prompt `retrying`; the no_response stall carries attempt and message."""
    _, out = run(version, "fail-retry", SHORT)
    stall = next(t for t in out if isinstance(t, Stalled))
    assert stall.retry is not None
    assert stall.retry.attempt is not None
    assert stall.retry.attempt >= 1
    assert stall.retry.message == "upstream exploded"
    recording = capture(version, "fail-retry")
    first_retry = next(
        r.at
        for r in recording
        if isinstance(r.event, StatusChanged) and r.event.run is SessionRun.RETRY
    )
    tracker = Tracker("test", Timeouts(first_response=600))
    replay(tracker, [r for r in recording if r.at <= first_retry])
    assert [p.state for p in tracker.pending(first_retry)] == [PromptState.RETRYING]


@pytest.mark.parametrize("version", VERSIONS)
def test_abort_is_aborted(version: str) -> None:
    """`session.error` MessageAbortedError ends the prompt as aborted; the later idle drops nothing."""
    _, out = run(version, "abort", Timeouts(first_response=600))
    assert kinds(out) == ["accepted", "completed:aborted"]
    assert completed(out)[0].reason == "MessageAbortedError"


@pytest.mark.parametrize("version", VERSIONS)
def test_abort_resolves_a_fired_stall(version: str) -> None:
    """A prompt stalled with no_response that is then aborted gets exactly one resolution."""
    _, out = run(version, "abort", Timeouts(first_response=1.0))
    assert kinds(out) == [
        "accepted",
        "stalled:no_response",
        "resolved:no_response",
        "completed:aborted",
    ]
    resolved = next(t for t in out if isinstance(t, Resolved))
    assert resolved.outcome is Outcome.ABORTED


def test_back_to_back_prompts_fold_into_the_later_reply_1_18() -> None:
    """Rule 4 (1.18.33): U1 is folded into U2's request; both are answered by its reply."""
    tracker, out = run("1.18.33", "two-prompts-queued", SHORT, linger=60)
    assert kinds(out) == [
        "accepted",
        "accepted",
        "first_response",
        "first_response",
        "completed:answered",
        "completed:answered",
    ]
    first, second = (t for t in out if isinstance(t, Accepted))
    assert {c.prompt.message_id for c in completed(out)} == {
        first.prompt.message_id,
        second.prompt.message_id,
    }
    assert tracker.pending_count == 0


def test_back_to_back_second_prompt_is_dropped_1_15() -> None:
    """Rule 6 (1.15.13): the second back-to-back prompt is stored, never answered: dropped at idle."""
    _, out = run("1.15.13", "two-prompts-queued", SHORT)
    assert kinds(out) == [
        "accepted",
        "accepted",
        "first_response",
        "completed:answered",
        "stalled:dropped",
        "completed:dropped",
    ]
    dropped = completed(out)[1]
    assert dropped.reason == "idle_without_reply"


@pytest.mark.parametrize("version", VERSIONS)
def test_prompt_queued_behind_a_running_reply_does_not_stall_while_waiting(version: str) -> None:
    """U2 arrives 3 s into U1's 8 s reply; its timer starts only when U1 is done."""
    timeouts = Timeouts(first_response=3.0, inactivity=3.0, tool=60.0)
    _, out = run(version, "two-prompts-queued-while-busy", timeouts)
    assert kinds(out) == [
        "accepted",
        "first_response",
        "accepted",
        "completed:answered",
        "first_response",
        "completed:answered",
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_server_assigned_ids_answer_both_prompts_in_order(version: str) -> None:
    """Without client ids both prompts get their own reply, one after the other."""
    _, out = run(version, "two-prompts-queued-server-ids", Timeouts(first_response=3.0))
    assert kinds(out).count("completed:answered") == 2
    assert "stalled:no_response" not in kinds(out)


@pytest.mark.parametrize("version", VERSIONS)
def test_repeated_message_id_after_answer_is_a_new_prompt_that_is_dropped(version: str) -> None:
    """Rule 5: a repeated messageID re-admits the answered message; busy→idle with no reply = dropped."""
    _, out = run(version, "duplicate-message-id", SHORT)
    assert kinds(out) == [
        "accepted",
        "first_response",
        "completed:answered",
        "accepted",
        "stalled:dropped",
        "completed:dropped",
    ]
    first, again = (t for t in out if isinstance(t, Accepted))
    assert first.prompt.message_id == again.prompt.message_id


@pytest.mark.parametrize("version", VERSIONS)
def test_repeated_message_id_before_the_reply_is_one_prompt(version: str) -> None:
    """Both calls land in one user message before the loop runs: one prompt, answered once."""
    _, out = run(version, "duplicate-message-id-immediate", SHORT)
    assert kinds(out) == ["accepted", "first_response", "completed:answered"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scenario", ["server-restart", "server-kill9"])
def test_server_death_leaves_the_prompt_pending_and_stalls_it(version: str, scenario: str) -> None:
    """Rule 8: no closing event arrives; the stream alone keeps the prompt pending until it stalls."""
    tracker, out = run(version, scenario, SHORT, linger=SHORT.first_response)
    assert kinds(out)[-1] == "stalled:no_response"
    assert tracker.pending_count == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_global_stream_gives_the_same_story_as_the_directory_stream(version: str) -> None:
    """`/global/event` (with its sync duplicates) yields exactly the transitions of `/event`."""
    for scenario in ("normal", "duplicate-message-id", "two-prompts-queued", "permission"):
        _, direct = run(version, scenario, SHORT)
        _, wrapped = run(version, scenario, SHORT, stream="global-event")
        assert kinds(wrapped) == kinds(direct), scenario
        assert all(
            t.prompt.directory and t.prompt.directory.startswith("/srv/opencode-capture/")
            for t in wrapped
        )


# -- synthetic sequences: behaviours the captures do not show -------------------------------------


def admit(tracker: Tracker, at: float, session: str = "ses_a", msg: str = "msg_u1") -> None:
    """A prompt is stored and its turn starts, as OpenCode does for every prompt without noReply."""
    tracker.feed(PromptAdmitted(session_id=session, message_id=msg, created_at=at), at)
    tracker.feed(StatusChanged(session, SessionRun.BUSY), at)


def test_busy_is_a_level_not_an_edge() -> None:
    """Repeated `busy` changes nothing: no transition, the deadline stays where it was."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 100.0)
    deadline = tracker.next_deadline()
    for t in (100.5, 101.0, 102.0):
        assert tracker.feed(StatusChanged("ses_a", SessionRun.BUSY), t) == []
    assert tracker.next_deadline() == deadline == 100.0 + SHORT.first_response


def test_each_stall_fires_once() -> None:
    """Ticking again and again after a deadline reports the stall only once."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 0.0)
    fired = [t for now in (5.0, 6.0, 50.0, 500.0) for t in tracker.tick(now)]
    assert kinds(fired) == ["stalled:no_response"]
    assert tracker.next_deadline() is None


def test_reply_after_no_response_resolves_then_inactivity_can_fire() -> None:
    """A late first token resolves no_response; a later silence is a separate inactive stall."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 0.0)
    tracker.feed(ReplyOpened("ses_a", "msg_a1", "msg_u1"), 0.1)
    out = tracker.tick(5.0)
    out += tracker.feed(ReplyActivity("ses_a", "msg_a1", PartKind.CONTENT), 7.0)
    out += tracker.tick(12.0)
    out += tracker.feed(ReplyActivity("ses_a", "msg_a1", PartKind.CONTENT), 13.0)
    out += tracker.feed(ReplyFinished("ses_a", "msg_a1", "msg_u1", "stop", None), 13.5)
    assert kinds(out) == [
        "stalled:no_response",
        "first_response",
        "resolved:no_response",
        "stalled:inactive",
        "resolved:inactive",
        "completed:answered",
    ]


def test_running_tool_gets_the_tool_timeout() -> None:
    """A tool in state running is work: silence up to --tool-timeout is fine, beyond is inactive."""
    tracker = Tracker("test", Timeouts(first_response=5, inactivity=5, tool=60))
    admit(tracker, 0.0)
    tracker.feed(ReplyOpened("ses_a", "msg_a1", "msg_u1"), 0.1)
    tracker.feed(ToolProgress("ses_a", "msg_a1", "call_1", running=True), 1.0)
    assert tracker.tick(30.0) == []
    assert tracker.next_deadline() == 61.0
    assert kinds(tracker.tick(61.0)) == ["stalled:inactive"]


def test_finished_tool_goes_back_to_the_inactivity_timeout() -> None:
    """Once the tool completes, the shorter inactivity timeout applies again."""
    tracker = Tracker("test", Timeouts(first_response=5, inactivity=5, tool=60))
    admit(tracker, 0.0)
    tracker.feed(ReplyOpened("ses_a", "msg_a1", "msg_u1"), 0.1)
    tracker.feed(ToolProgress("ses_a", "msg_a1", "call_1", running=True), 1.0)
    tracker.feed(ToolProgress("ses_a", "msg_a1", "call_1", running=False), 20.0)
    assert tracker.next_deadline() == 25.0


def test_child_session_activity_keeps_the_parent_alive() -> None:
    """A sub-agent (child session) working is activity of the parent's running `task` tool."""
    timeouts = Timeouts(first_response=5, inactivity=5, tool=10)
    tracker = Tracker("test", timeouts)
    admit(tracker, 0.0, session="ses_parent", msg="msg_p")
    tracker.feed(ReplyOpened("ses_parent", "msg_pa", "msg_p"), 0.1)
    tracker.feed(ToolProgress("ses_parent", "msg_pa", "call_task", running=True), 1.0)
    tracker.feed(SessionSeen("ses_child", parent_session_id="ses_parent"), 1.5)
    admit(tracker, 2.0, session="ses_child", msg="msg_c")
    tracker.feed(ReplyOpened("ses_child", "msg_ca", "msg_c"), 2.1)
    out: list[Transition] = []
    for t in range(3, 40, 3):
        out += tracker.tick(float(t))
        out += tracker.feed(ReplyActivity("ses_child", "msg_ca", PartKind.CONTENT), float(t))
    assert "stalled:inactive" not in kinds(out)
    # The child prompt itself is tracked like any other.
    pending = {p.ref.session_id: p for p in tracker.pending(40.0)}
    assert pending["ses_child"].ref.parent_session_id == "ses_parent"
    assert kinds(tracker.tick(40.0 + timeouts.tool)).count("stalled:inactive") == 2


def test_child_permission_blocks_the_parent_too() -> None:
    """A sub-agent waiting for a person pauses the parent's timers as well."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 0.0, session="ses_parent", msg="msg_p")
    tracker.feed(SessionSeen("ses_child", parent_session_id="ses_parent"), 0.5)
    tracker.feed(HumanAsked("ses_child", "per_1"), 1.0)
    assert tracker.tick(100.0) == []
    assert [p.state for p in tracker.pending(100.0)] == [PromptState.BLOCKED]
    tracker.feed(HumanAnswered("ses_child", "per_1"), 100.0)
    # One second had run before the wait; four remain.
    assert tracker.next_deadline() == pytest.approx(104.0)


def test_resent_user_message_after_completion_is_not_a_new_prompt() -> None:
    """OpenCode re-sends the stored user message after a run; same time.created, no new prompt."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 0.0)
    tracker.feed(ReplyOpened("ses_a", "msg_a1", "msg_u1"), 0.1)
    tracker.feed(ReplyFinished("ses_a", "msg_a1", "msg_u1", "stop", None), 1.0)
    again = tracker.feed(PromptAdmitted("ses_a", "msg_u1", created_at=0.0), 1.1)
    assert again == []
    assert tracker.pending_count == 0


def test_assistant_error_other_than_abort_is_failed() -> None:
    """An assistant completed with an error such as APIError ends the prompt as failed."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 0.0)
    tracker.feed(ReplyOpened("ses_a", "msg_a1", "msg_u1"), 0.1)
    out = tracker.feed(ReplyFinished("ses_a", "msg_a1", "msg_u1", None, "APIError", "bad"), 2.0)
    assert kinds(out) == ["stalled:failed", "completed:failed"]
    assert completed(out)[0].reason == "APIError"
    stall = out[0]
    assert isinstance(stall, Stalled)
    assert stall.error is not None
    assert (stall.error.name, stall.error.message) == ("APIError", "bad")


def test_events_for_unknown_sessions_and_messages_change_nothing() -> None:
    """Out-of-order or foreign events are ignored without error."""
    tracker = Tracker("test", SHORT)
    events: list[Event] = [
        ReplyOpened("ses_x", "msg_a", "msg_u"),
        ReplyActivity("ses_x", "msg_a", PartKind.CONTENT),
        ToolProgress("ses_x", "msg_a", "call", running=True),
        ReplyFinished("ses_x", "msg_a", "msg_u", "stop", None),
        StatusChanged("ses_x", SessionRun.IDLE),
        HumanAnswered("ses_x", "per_unknown"),
    ]
    for i, event in enumerate(events):
        assert tracker.feed(event, float(i)) == []
    assert tracker.pending_count == 0


def test_memory_is_bounded_by_pending_work() -> None:
    """Completed prompts are forgotten; sessions and prompts beyond the limits are evicted."""
    tracker = Tracker("test", SHORT, Limits(sessions=50, prompts=20))
    for i in range(200):
        admit(tracker, float(i), session=f"ses_{i}", msg=f"msg_{i}")
    assert tracker.pending_count == 20
    assert len(tracker.pending(300.0)) == 20
    assert tracker.evicted_prompts == 180
    assert tracker.evicted_sessions == 150


def test_folded_prompt_that_already_stalled_stays_stalled_until_the_reply() -> None:
    """Found by the fuzz test: U1 stalls, is folded into U2's request, and resolves once, with
    U2's reply. U2 queued behind U1: its clock started only when the reply it shares opened."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 0.0, msg="msg_u1")
    admit(tracker, 1.0, msg="msg_u2")
    out = tracker.tick(5.0)
    out += tracker.feed(ReplyOpened("ses_a", "msg_a", "msg_u2"), 6.0)
    out += tracker.tick(10.5)
    out += tracker.feed(ReplyActivity("ses_a", "msg_a", PartKind.CONTENT), 10.6)
    out += tracker.feed(ReplyFinished("ses_a", "msg_a", "msg_u2", "stop", None), 12.0)
    assert [(kinds([t])[0], t.prompt.message_id) for t in out] == [
        ("stalled:no_response", "msg_u1"),
        ("first_response", "msg_u1"),
        ("resolved:no_response", "msg_u1"),
        ("first_response", "msg_u2"),
        ("completed:answered", "msg_u1"),
        ("completed:answered", "msg_u2"),
    ]


def test_only_events_that_can_pull_a_deadline_earlier_ask_for_a_reschedule() -> None:
    """Deltas push deadlines later (no reschedule needed); a first response or a new prompt may
    pull one earlier."""
    tracker = Tracker("test", Timeouts(first_response=300, inactivity=60, tool=600))
    admit(tracker, 0.0)
    assert tracker.deadline_may_be_earlier
    tracker.feed(ReplyOpened("ses_a", "msg_a1", "msg_u1"), 0.1)
    tracker.feed(ReplyActivity("ses_a", "msg_a1", PartKind.CONTENT), 1.0)
    assert tracker.deadline_may_be_earlier  # first response: 60 s inactivity < 300 s
    assert tracker.next_deadline() == 61.0
    tracker.feed(ReplyActivity("ses_a", "msg_a1", PartKind.CONTENT), 2.0)
    assert not tracker.deadline_may_be_earlier
    assert tracker.next_deadline() == 62.0
