"""The tracker against real captures of rules 9-13: failures, noReply, /shell, deletes, rejects.

The captures (tests/fixtures/opencode/1.18.33, made by tests/e2e/capture.py against a real
`opencode serve` 1.18.33) hold each case exactly as the server sent it.
"""

from __future__ import annotations

import pytest

from tests.conftest import run
from tests.test_tracker import SHORT, admit, completed, kinds
from watchdog.core.events import (
    Origin,
    PartKind,
    PromptAdmitted,
    PromptSnapshot,
    ReplyActivity,
    ReplyOpened,
    ReplySnapshot,
    SessionDeleted,
    SessionFailed,
    SessionRun,
    SessionSnapshot,
    StatusChanged,
)
from watchdog.core.settings import Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Accepted, Outcome, PromptState, Stalled, StallKind, Transition

VERSION = "1.18.33"
STREAMS = ("event", "global-event")


def stalls(transitions: list[Transition]) -> list[Stalled]:
    return [t for t in transitions if isinstance(t, Stalled)]


# -- rule 9: a prompt that failed before it was stored ------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
def test_failure_before_the_message_was_stored_is_one_failed_prompt(stream: str) -> None:
    """An unknown agent: two `session.error`, nothing else; one failed prompt, one alert."""
    tracker, out = run(VERSION, "unknown-agent", SHORT, linger=60, stream=stream)
    failed = [t for t in stalls(out) if t.kind is StallKind.FAILED]
    assert len(failed) == 1
    stall = failed[0]
    assert stall.prompt.message_id is None
    assert stall.error is not None
    assert stall.error.name == "UnknownError"
    assert stall.error.message is not None
    assert stall.error.message.startswith("Agent not found")
    # accepted = completed + pending holds, for the failure and the normal prompt after it.
    outcomes = [c.outcome for c in completed(out)]
    assert outcomes == [Outcome.FAILED, Outcome.ANSWERED]
    assert sum(isinstance(t, Accepted) for t in out) == 2
    assert tracker.pending_count == 0


def test_later_prompt_in_the_same_session_is_not_blamed() -> None:
    """The normal prompt sent after the failure is answered, with no stall of its own."""
    _, out = run(VERSION, "unknown-agent", SHORT, linger=60)
    later = [t.prompt.message_id for t in stalls(out) if t.prompt.message_id is not None]
    assert later == []
    assert kinds(out)[-3:] == ["accepted", "first_response", "completed:answered"]


def test_failure_after_the_message_was_stored_fails_that_prompt_once() -> None:
    """An unknown model: stored, busy, error, idle, error again; the prompt fails, once."""
    tracker, out = run(VERSION, "unknown-model", SHORT, linger=60)
    assert kinds(out) == ["accepted", "stalled:failed", "completed:failed"]
    stall = stalls(out)[0]
    assert stall.prompt.message_id is not None
    assert stall.error is not None
    assert stall.error.message == "Model not found: fake/no-such-model."
    assert tracker.pending_count == 0


def test_provider_error_without_retry_is_failed_with_its_cause() -> None:
    """A provider answering 400: failed at once, with the provider's message and the model."""
    _, out = run(VERSION, "provider-400", SHORT, linger=60)
    assert kinds(out) == ["accepted", "stalled:failed", "completed:failed"]
    stall = stalls(out)[0]
    assert stall.error is not None
    assert stall.error.name == "APIError"
    assert stall.error.message == "the fake rejects this request"
    assert (stall.prompt.provider, stall.prompt.model) == ("fake", "fake-1")


def test_long_error_messages_are_cut() -> None:
    """A server error message (a stack trace, say) is cut to a length fit for an alert."""
    _, out = run(VERSION, "unknown-agent", SHORT)
    # The echo carries the stack trace; the reported error is the first, short one.
    stall = stalls(out)[0]
    assert stall.error is not None
    assert stall.error.message is not None
    assert len(stall.error.message) <= 300


def test_abort_with_nothing_pending_is_no_failure() -> None:
    """A `MessageAbortedError` for an idle session reports nothing."""
    tracker = Tracker("test", SHORT)
    assert tracker.feed(SessionFailed("ses_a", "MessageAbortedError"), 1.0) == []


def test_two_failures_apart_are_two_alerts() -> None:
    """Only the immediate echo of a failure is folded; a later failure is reported again."""
    tracker = Tracker("test", SHORT)
    first = tracker.feed(SessionFailed("ses_a", "UnknownError", "Agent not found"), 1.0)
    echo = tracker.feed(SessionFailed("ses_a", "UnknownError", "stack"), 1.001)
    second = tracker.feed(SessionFailed("ses_a", "UnknownError", "Agent not found"), 30.0)
    assert kinds(first) == ["accepted", "stalled:failed", "completed:failed"]
    assert echo == []
    assert kinds(second) == kinds(first)


# -- rule 10: noReply ---------------------------------------------------------------------------


def test_no_reply_message_never_stalls_or_counts_as_answered() -> None:
    """A noReply message starts no turn: it ends as no_reply, never stalled, dropped or answered.

    In the capture a normal prompt follows 3 s later and is answered on its own.
    """
    tracker, out = run(VERSION, "no-reply", SHORT, linger=600)
    assert stalls(out) == []
    ends = completed(out)
    assert [c.outcome for c in ends] == [Outcome.NO_REPLY, Outcome.ANSWERED]
    assert ends[0].reason == "no_turn_started"
    assert ends[0].prompt.message_id != ends[1].prompt.message_id
    assert tracker.pending_count == 0


def test_no_reply_message_alone_ends_after_the_turn_start_time() -> None:
    """With nothing after it, the message is waiting until `turn_start`, then no_reply."""
    timeouts = Timeouts(first_response=1.0, inactivity=1.0, tool=1.0, turn_start=10.0)
    tracker = Tracker("test", timeouts)
    tracker.feed(PromptAdmitted("ses_a", "msg_n", created_at=100.0), 100.0)
    assert tracker.next_deadline() == 110.0
    assert [v.state for v in tracker.pending(105.0)] == [PromptState.AWAITING_TURN]
    assert tracker.tick(105.0) == []
    out = tracker.tick(110.0)
    assert kinds(out) == ["completed:no_reply"]
    assert tracker.next_deadline() is None


def test_busy_after_the_message_makes_it_a_prompt() -> None:
    """A real prompt turns its idle session busy; from then (its turn) the first-response timer runs."""
    tracker = Tracker("test", SHORT)
    tracker.feed(StatusChanged("ses_a", SessionRun.IDLE), 99.0)
    tracker.feed(PromptAdmitted("ses_a", "msg_u", created_at=100.0), 100.0)
    assert [v.state for v in tracker.pending(100.0)] == [PromptState.AWAITING_TURN]
    tracker.feed(StatusChanged("ses_a", SessionRun.BUSY), 100.01)
    assert [v.state for v in tracker.pending(100.01)] == [PromptState.WAITING]
    assert tracker.next_deadline() == 100.01 + SHORT.first_response
    assert kinds(tracker.tick(200.0)) == ["stalled:no_response"]


def test_message_stored_while_the_session_runs_is_a_prompt() -> None:
    """Stored while busy, a message queues behind the running turn: tracked, not a noReply."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 100.0)
    tracker.feed(PromptAdmitted("ses_a", "msg_u2", created_at=101.0), 101.0)
    assert [v.state for v in tracker.pending(102.0)] == [PromptState.WAITING, PromptState.QUEUED]
    assert "completed:no_reply" not in kinds(tracker.tick(200.0))


# -- rule 4 and item 4: each prompt's clock is its own -------------------------------------------


def test_folded_prompt_keeps_its_own_clock() -> None:
    """A later prompt folded with an older pending one is timed from its own acceptance."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 100.0, msg="msg_u1")  # pending, no reply yet
    tracker.feed(PromptAdmitted("ses_a", "msg_u2", created_at=104.0), 104.0)
    tracker.feed(ReplyOpened("ses_a", "msg_a2", "msg_u2"), 104.01)
    out = tracker.tick(105.0)  # u1's deadline: only u1 stalls
    assert [(s.prompt.message_id, s.kind) for s in stalls(out)] == [
        ("msg_u1", StallKind.NO_RESPONSE)
    ]
    out = tracker.feed(ReplyActivity("ses_a", "msg_a2", PartKind.CONTENT), 104.3)
    out += tracker.tick(109.2)  # past u2's own first-response deadline, before inactivity
    assert [s.prompt.message_id for s in stalls(out)] == []


# -- rule 11: /shell ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
def test_shell_command_is_answered(stream: str) -> None:
    """A shell reply completes without finish or error after its tool ran: answered."""
    tracker, out = run(VERSION, "shell", SHORT, linger=60, stream=stream)
    assert kinds(out) == ["accepted", "first_response", "completed:answered"]
    assert tracker.pending_count == 0


def test_retry_abort_is_still_aborted_not_answered() -> None:
    """The same shape with nothing produced (abort in a retry wait) stays aborted."""
    _, out = run(VERSION, "fail-retry", SHORT)
    assert completed(out)[-1].outcome is Outcome.ABORTED


def test_snapshot_of_a_shell_reply_is_answered() -> None:
    """A REST read shows the shell reply completed, no finish, a tool part: answered."""
    tracker = Tracker("test", SHORT)
    tracker.feed(PromptAdmitted("ses_a", "msg_u", 100.0, origin=Origin.LIVE), 100.0)
    tracker.feed(StatusChanged("ses_a", SessionRun.BUSY), 100.0)
    reply = ReplySnapshot("msg_a", completed=True, finish=None, error=None, has_content=True)
    snap = SessionSnapshot(
        "ses_a", SessionRun.IDLE, 101.0, prompts=(PromptSnapshot("msg_u", 100.0, (reply,)),)
    )
    out = tracker.feed(snap, 101.0)
    assert [c.outcome for c in completed(out)] == [Outcome.ANSWERED]


# -- rule 12: deleted sessions ------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
def test_deleting_a_session_ends_its_prompt_and_resolves_its_stall(stream: str) -> None:
    """`session.deleted` while a prompt hangs: its stall resolves, it ends aborted, all forgotten."""
    timeouts = Timeouts(first_response=1.0, inactivity=1.0, tool=60.0)
    tracker, out = run(VERSION, "session-deleted", timeouts, linger=600, stream=stream)
    assert kinds(out) == [
        "accepted",
        "stalled:no_response",
        "resolved:no_response",
        "completed:aborted",
    ]
    assert completed(out)[0].reason == "session_deleted"
    assert tracker.pending_count == 0
    assert tracker.pending_sessions() == {}
    assert tracker.next_deadline() is None


# -- rule 13: a person's reject -----------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
def test_rejected_permission_ends_without_alert(stream: str) -> None:
    """Reject errors the tool and ends the turn: aborted with reason rejected, no stall at all."""
    tracker, out = run(VERSION, "permission-reject", SHORT, linger=600, stream=stream)
    assert stalls(out) == []
    assert [(c.outcome, c.reason) for c in completed(out)] == [(Outcome.ABORTED, "rejected")]
    assert tracker.pending_count == 0


def test_once_approved_permission_still_ends_answered() -> None:
    """Only a reject changes the ending: the approved capture stays answered."""
    _, out = run(VERSION, "permission", SHORT, linger=60)
    assert [c.outcome for c in completed(out)] == [Outcome.ANSWERED]


# -- item 8: live and recovered prompts are timed alike -----------------------------------------


def test_live_and_recovered_prompts_agree_on_acceptance_time() -> None:
    """Both are timed from `time.created` corrected by the smallest arrival delay seen."""
    tracker = Tracker("test", SHORT)
    # Our clock runs 50 s ahead of the server's; deliveries take 0.01 s when warm.
    tracker.feed(PromptAdmitted("ses_w", "msg_w", created_at=1000.0), 1050.01)
    # A cold server delivers this prompt 5 s late.
    tracker.feed(PromptAdmitted("ses_a", "msg_live", created_at=1100.0), 1155.0)
    # The same kind of prompt, found over REST after a reconnect.
    snap = SessionSnapshot(
        "ses_b", SessionRun.BUSY, 1160.0, prompts=(PromptSnapshot("msg_rest", 1100.0),)
    )
    tracker.feed(snap, 1160.0)
    accepted = {v.ref.message_id: v.ref.accepted_at for v in tracker.pending(1160.0)}
    assert accepted["msg_live"] == pytest.approx(1150.01)
    assert accepted["msg_rest"] == pytest.approx(1150.01)
    assert tracker.clock_offset == pytest.approx(50.01)


def test_unusable_server_time_falls_back_to_arrival() -> None:
    """A server clock far behind the arrival (after a good sample) gives the receive time."""
    tracker = Tracker("test", SHORT)
    tracker.feed(PromptAdmitted("ses_w", "msg_w", created_at=1000.0), 1000.01)
    tracker.feed(PromptAdmitted("ses_a", "msg_a", created_at=float("nan")), 2000.0)
    tracker.feed(PromptAdmitted("ses_b", "msg_b", created_at=1.0), 2000.0)
    accepted = {v.ref.message_id: v.ref.accepted_at for v in tracker.pending(2000.0)}
    assert accepted["msg_a"] == 2000.0
    assert accepted["msg_b"] == 2000.0


def test_events_after_a_delete_do_not_bring_the_session_back() -> None:
    """A repeated admission for a deleted session starts nothing."""
    tracker = Tracker("test", SHORT)
    admit(tracker, 100.0)
    tracker.feed(SessionDeleted("ses_a"), 101.0)
    again = PromptAdmitted("ses_a", "msg_u1", created_at=100.0)
    assert tracker.feed(again, 102.0) == []
    assert tracker.pending_count == 0


def test_heartbeats_time_the_first_prompt_of_a_cold_server() -> None:
    """A late-delivered first prompt is timed from its `time.created`, thanks to earlier samples."""
    tracker = Tracker("test", SHORT)
    tracker.observe_clock(999.0, 999.002)  # server.connected, our clock 2 ms later
    tracker.feed(PromptAdmitted("ses_a", "msg_u", created_at=1000.0), 1005.0)  # delivered 5 s late
    (view,) = tracker.pending(1005.0)
    assert view.ref.accepted_at == pytest.approx(1000.002)


def test_idle_read_over_rest_does_not_drop_a_no_reply_message() -> None:
    """A reconnect's REST read finds the session idle: a message without a turn ends no_reply."""
    tracker = Tracker("test", SHORT)
    tracker.feed(PromptAdmitted("ses_a", "msg_n", created_at=100.0), 100.0)
    snap = SessionSnapshot(
        "ses_a", SessionRun.IDLE, 102.0, prompts=(PromptSnapshot("msg_n", 100.0),)
    )
    out = tracker.feed(snap, 102.0)
    assert kinds(out) == ["completed:no_reply"]


def test_a_server_clock_days_off_is_not_an_offset() -> None:
    """Times days away (a broken clock, ids without time) are ignored: a live prompt is timed
    from its arrival, and a recovered one is not aged by days."""
    tracker = Tracker("test", SHORT)
    tracker.observe_clock(1000.0 - 5 * 86_400, 1000.0)  # a heartbeat stamped five days ago
    assert tracker.clock_offset is None
    tracker.feed(PromptAdmitted("ses_a", "msg_live", created_at=1000.0 - 5 * 86_400), 1000.0)
    snap = SessionSnapshot(
        "ses_b", SessionRun.BUSY, 1000.0, prompts=(PromptSnapshot("msg_rest", 999.0),)
    )
    tracker.feed(snap, 1000.0)
    accepted = {v.ref.message_id: v.ref.accepted_at for v in tracker.pending(1000.0)}
    assert accepted == {"msg_live": 1000.0, "msg_rest": 999.0}
