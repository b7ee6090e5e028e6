"""The OpenCode 2 decoder (`/api/event`): each stream's verdict through the real core, and bad
input as data, never an exception.

`tests/fixtures/opencode2/amx-2.0.16/` holds real recordings of opencode v2.0.16 (copied byte-exact,
see the SOURCES file there); the `*.api-event.sse` streams beside them are reconstructions that
follow published real 2.0.12/2.0.19 streams and the upstream schema; the cases built in this file
are synthetic: no real stream of them was seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from watchdog.app.replay import analyse, read_file, read_recording
from watchdog.core.events import (
    Heartbeat,
    HumanAnswered,
    HumanAsked,
    Ignored,
    Malformed,
    PromptAdmitted,
    ReplyFinished,
    ReplyOpened,
    SessionFailed,
    SessionRun,
    StatusChanged,
    StreamConnected,
    ToolProgress,
)
from watchdog.core.server import ServerCore
from watchdog.core.settings import Timeouts
from watchdog.core.transitions import (
    Completed,
    FirstResponse,
    Outcome,
    Resolved,
    Stalled,
    StallKind,
    Transition,
    Usage,
)
from watchdog.io.record import Recorder
from watchdog.opencode.ids import event_time
from watchdog.opencode.strip import strip_text
from watchdog.opencode.v2 import V2Stream
from watchdog.opencode.v2_rest import decode_messages

FIXTURES = Path(__file__).parent / "fixtures" / "opencode2"
TIMEOUTS = Timeouts(first_response=60.0, inactivity=60.0, tool=600.0, turn_start=30.0)


def sse_items(name: str) -> list[str]:
    """The stream's data fields in order, a heartbeat comment as "" (as the splitter gives it)."""
    text = (FIXTURES / f"{name}.api-event.sse").read_text(encoding="utf-8")
    items = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            items.append(block[6:])
        elif block.startswith(":"):
            items.append("")
    return items


def created_ms(data: str) -> float | None:
    if not data:
        return None
    value = json.loads(data).get("created")
    return float(value) if isinstance(value, int | float) else None


def play(items: Iterable[str], core: ServerCore | None = None) -> list[Transition]:
    """Feed each line at the server time it says it was made (a heartbeat: the time before)."""
    core = core or ServerCore("oc2", V2Stream(), TIMEOUTS)
    out: list[Transition] = []
    wall = 1_790_000_000.0
    for data in items:
        ms = created_ms(data)
        if ms is not None:
            wall = max(wall, ms / 1000.0)
        out += core.tick(wall, wall)  # what came due before this line arrived
        out += core.feed_line(data, wall, wall)
    return out


def endings(out: list[Transition]) -> list[tuple[Outcome, str | None]]:
    return [(t.outcome, t.reason) for t in out if isinstance(t, Completed)]


def stalls(out: list[Transition]) -> list[StallKind]:
    return [t.kind for t in out if isinstance(t, Stalled)]


@pytest.mark.parametrize("name", sorted(p.name.split(".")[0] for p in FIXTURES.glob("*.sse")))
def test_every_fixture_line_decodes(name: str) -> None:
    """No line of a stream is malformed or of a type the decoder does not know."""
    wire = V2Stream()
    for data in sse_items(name):
        line = wire.decode(data, 1_790_000_000.0)
        assert line is not None
        assert not isinstance(line.event, Malformed), (name, data[:80], line.event)
        assert not (isinstance(line.event, Ignored) and not line.event.known), (name, line.type)


def test_the_first_line_greets_and_samples_the_clock() -> None:
    first = sse_items("answered")[0]
    line = V2Stream().decode(first, 1_790_768_860.0)
    assert line is not None
    assert isinstance(line.event, StreamConnected)
    assert line.sent_at == event_time(json.loads(first)["id"], 1_790_768_860.0)


def test_a_heartbeat_comment_is_a_heartbeat() -> None:
    line = V2Stream().decode("", 0.0)
    assert line is not None
    assert isinstance(line.event, Heartbeat)
    assert line.type == "heartbeat"


def test_answered() -> None:
    out = play(sse_items("answered"))
    assert endings(out) == [(Outcome.ANSWERED, "stop")]
    assert stalls(out) == []
    assert len([t for t in out if isinstance(t, FirstResponse)]) == 1
    usage = [t for t in out if isinstance(t, Usage)]
    assert len(usage) == 1
    assert usage[0].tokens is not None
    assert usage[0].tokens.input == 19477
    assert usage[0].model == "fake-model"
    assert usage[0].provider == "fake"


def test_answered_with_tools_and_a_permission_that_paused_the_clock() -> None:
    """The person took 24.5 s to answer; with a 10 s first-response timeout nothing fires,
    because the clock stood still while the permission was asked."""
    core = ServerCore("oc2", V2Stream(), Timeouts(first_response=10.0, inactivity=10.0, tool=10.0))
    out = play(sse_items("tools"), core)
    assert endings(out) == [(Outcome.ANSWERED, "stop")]
    assert stalls(out) == []
    assert len([t for t in out if isinstance(t, Usage)]) == 2


def test_the_same_stream_without_the_permission_fires_the_tool_timer() -> None:
    """It is the permission that paused the clock: without it, 24.5 s of tool silence is inactive."""
    items = [d for d in sse_items("tools") if '"permission.' not in d]
    core = ServerCore("oc2", V2Stream(), Timeouts(first_response=10.0, inactivity=10.0, tool=10.0))
    out = play(items, core)
    assert stalls(out) == [StallKind.INACTIVE]
    assert endings(out) == [(Outcome.ANSWERED, "stop")]


def test_interrupted_by_the_user() -> None:
    out = play(sse_items("interrupted"))
    assert endings(out) == [(Outcome.ABORTED, "MessageAbortedError")]
    assert stalls(out) == []


def test_a_dismissed_question_and_a_steer_abort_the_first_and_answer_the_second() -> None:
    out = play(sse_items("steer-cancel"))
    assert endings(out) == [(Outcome.ABORTED, "MessageAbortedError"), (Outcome.ANSWERED, "stop")]
    done = [t for t in out if isinstance(t, Completed)]
    assert done[0].prompt.message_id != done[1].prompt.message_id
    assert stalls(out) == []


def test_an_execution_that_fails_before_any_step_fails_its_prompt_with_the_cause() -> None:
    out = play(sse_items("execution-failed"))
    assert endings(out) == [(Outcome.FAILED, "provider.no-route")]
    failed = [t for t in out if isinstance(t, Stalled)]
    assert [t.kind for t in failed] == [StallKind.FAILED]
    assert failed[0].error is not None
    assert failed[0].error.name == "provider.no-route"
    assert failed[0].error.message == "Model unavailable: fake/nope"


# -- real recordings: opencode v2.0.16 (saifulapm/amx) -------------------------------------

RECORDED = FIXTURES / "amx-2.0.16"
RECORDINGS = ("turn", "steer", "interrupt", "permission", "question", "failure")


def recorded(name: str) -> list[str]:
    """A recorded event feed, one event a line, as the server made them (no SSE framing, no
    `server.connected`, no heartbeat comments: the recorder sat behind the client)."""
    return (RECORDED / "events" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()


def inboxes(name: str) -> list[str]:
    """The prompts a recording enqueues, in order."""
    return [
        json.loads(d)["data"]["inboxID"]
        for d in recorded(name)
        if json.loads(d)["type"] == "session.inbox.enqueued"
    ]


def completed(out: list[Transition]) -> list[tuple[str | None, Outcome, str | None]]:
    return [(t.prompt.message_id, t.outcome, t.reason) for t in out if isinstance(t, Completed)]


def last_event(name: str) -> object:
    """What the decoder makes of a recording's last terminal event, after the lines before it."""
    wire = V2Stream()
    lines = recorded(name)
    terminal = max(
        i for i, d in enumerate(lines) if json.loads(d)["type"].startswith("session.execution.")
    )
    for data in lines[:terminal]:
        wire.decode(data, 0.0)
    line = wire.decode(lines[terminal], 0.0)
    assert line is not None
    return line.event


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_recorded_line_decodes_and_unknown_kinds_are_tolerated(name: str) -> None:
    """Nothing of a real 2.0.16 feed is malformed; what it sends beyond the tracker's needs
    (`session.viewed`, `shell.*`, `project.updated`, `session.instructions.updated`, usage and
    renames) is known and ignored, never an error."""
    wire = V2Stream()
    types = set()
    for data in recorded(name):
        line = wire.decode(data, 1_790_708_782.0)
        assert line is not None
        assert not isinstance(line.event, Malformed), (name, data[:80], line.event)
        assert not (isinstance(line.event, Ignored) and not line.event.known), (name, line.type)
        types.add(line.type)
    assert "session.created" in types
    assert "session.instructions.updated" in types


def test_recorded_turn_with_a_shell_tool_is_answered() -> None:
    """A fresh session, `sleep 40` in the shell tool (33 s without an event while it ran), then
    "done": one prompt answered, its two steps' usage told, nothing fired within the defaults."""
    out = play(recorded("turn"))
    assert completed(out) == [(inboxes("turn")[0], Outcome.ANSWERED, "stop")]
    assert stalls(out) == []
    assert len([t for t in out if isinstance(t, FirstResponse)]) == 1
    usage = [t for t in out if isinstance(t, Usage)]
    assert [u.tokens.input if u.tokens else None for u in usage] == [3643, 3737]
    assert {(u.provider, u.model) for u in usage} == {("opencode", "longcat-2.5-preview-free")}


def test_recorded_turn_fires_the_tool_timer_only_when_the_tool_outlasts_it() -> None:
    """The same feed with a 20 s tool timeout: the 33 s of a running `sleep 40` is a stall, and
    the reply that follows resolves it; it is the tool timer that let the defaults wait."""
    core = ServerCore("oc2", V2Stream(), Timeouts(first_response=60.0, inactivity=60.0, tool=20.0))
    out = play(recorded("turn"), core)
    assert stalls(out) == [StallKind.INACTIVE]
    assert [t.kind for t in out if isinstance(t, Resolved)] == [StallKind.INACTIVE]
    assert endings(out) == [(Outcome.ANSWERED, "stop")]


def test_recorded_steer_answers_both_prompts_in_one_execution() -> None:
    """A second message sent mid-turn is enqueued, delivered at the next step boundary of the same
    execution, and answered by that execution's last step: both prompts answered, no alert."""
    first, second = inboxes("steer")
    out = play(recorded("steer"))
    assert completed(out) == [
        (first, Outcome.ANSWERED, "stop"),
        (second, Outcome.ANSWERED, "stop"),
    ]
    assert stalls(out) == []
    done = [t for t in out if isinstance(t, Completed)]
    assert done[0].at == done[1].at  # one step's end answered both
    types = [json.loads(d)["type"] for d in recorded("steer")]
    assert types.count("session.execution.started") == 1


def test_recorded_interrupt_by_the_user_is_aborted_and_ends_the_loop() -> None:
    """Esc twice: the shell call and its step fail "aborted", then `interrupted` reason "user"."""
    out = play(recorded("interrupt"))
    assert completed(out) == [(inboxes("interrupt")[0], Outcome.ABORTED, "MessageAbortedError")]
    assert stalls(out) == []
    sid = json.loads(recorded("interrupt")[0])["data"]["sessionID"]
    assert last_event("interrupt") == StatusChanged(sid, SessionRun.IDLE)


def test_recorded_permission_allowed_then_rejected_answers_then_aborts() -> None:
    """The first turn's shell call is allowed once and answered. The second turn's is rejected:
    OpenCode 2.0.16 fails the tool ("The user declined this tool call") and the step ("aborted"),
    then interrupts the execution with reason "shutdown" and sends nothing more. The honest verdict
    for that prompt is aborted: the person refused, the loop stopped; nothing failed and nobody
    waits for a reply, so it is neither a failure nor a stall and alerts nobody. The shutdown
    interrupt after the aborted step ends the loop (the session is idle), as Esc does."""
    first, second = inboxes("permission")
    out = play(recorded("permission"))
    assert completed(out) == [
        (first, Outcome.ANSWERED, "stop"),
        (second, Outcome.ABORTED, "MessageAbortedError"),
    ]
    assert stalls(out) == []
    sid = json.loads(recorded("permission")[0])["data"]["sessionID"]
    assert last_event("permission") == StatusChanged(sid, SessionRun.IDLE)


def test_recorded_permission_wait_pauses_the_timers() -> None:
    """The person took 31.5 s to allow the first call. With 10 s timeouts nothing fires: the
    clocks stand still while a person is asked. Without the permission events, the same 31.5 s
    of a running tool is a stall: it is the wait that paused them."""
    short = Timeouts(first_response=10.0, inactivity=10.0, tool=10.0)
    out = play(recorded("permission"), ServerCore("oc2", V2Stream(), short))
    assert stalls(out) == []
    assert [o for o, _ in endings(out)] == [Outcome.ANSWERED, Outcome.ABORTED]
    unasked = [d for d in recorded("permission") if '"type":"permission.' not in d]
    out = play(unasked, ServerCore("oc2", V2Stream(), short))
    assert stalls(out) == [StallKind.INACTIVE]


def test_after_a_rejection_ends_the_loop_a_next_prompt_waits_for_its_own_turn() -> None:
    """The session is idle after the rejected turn: a prompt enqueued then (SYNTHETIC: no real
    stream of it) that starts no execution ends no_reply after the turn-start timeout, without an
    alert; a session still taken for busy would have timed it as a reply and fired no_response."""
    lines = recorded("permission")
    sid = json.loads(lines[0])["data"]["sessionID"]
    end = json.loads(lines[-1])["created"]
    after = json.dumps(
        {
            "id": "evt_x",
            "created": end + 1_000,
            "type": "session.inbox.enqueued",
            "data": {"sessionID": sid, "inboxID": "msg_next", "item": {"type": "user"}},
        }
    )
    later = json.dumps(
        {
            "id": "evt_y",
            "created": end + 200_000,
            "type": "session.usage.updated",
            "data": {"sessionID": sid},
        }
    )
    out = play([*lines, after, later])
    assert completed(out)[-1] == ("msg_next", Outcome.NO_REPLY, "no_turn_started")
    assert stalls(out) == []


def test_recorded_question_answered_then_dismissed_answers_then_aborts() -> None:
    """A question form answered, then a second one dismissed with Esc: `form.cancelled`, the tool
    and step fail "aborted", the execution is interrupted "shutdown". As for a rejected permission
    the dismissed turn is aborted, no alert, and the loop stopped."""
    first, second = inboxes("question")
    out = play(recorded("question"))
    assert completed(out) == [
        (first, Outcome.ANSWERED, "stop"),
        (second, Outcome.ABORTED, "MessageAbortedError"),
    ]
    assert stalls(out) == []
    sid = json.loads(recorded("question")[0])["data"]["sessionID"]
    assert last_event("question") == StatusChanged(sid, SessionRun.IDLE)


def test_recorded_question_form_wait_pauses_the_timers() -> None:
    """The person took 19.4 s to answer the first form; with a 10 s tool timeout nothing fires
    (the first step took 12.8 s to begin, hence 30 s to first response). Without the form events
    the wait is a stall."""
    short = Timeouts(first_response=30.0, inactivity=10.0, tool=10.0)
    out = play(recorded("question"), ServerCore("oc2", V2Stream(), short))
    assert stalls(out) == []
    unasked = [d for d in recorded("question") if '"type":"form.' not in d]
    out = play(unasked, ServerCore("oc2", V2Stream(), short))
    assert stalls(out) == [StallKind.INACTIVE]


def test_recorded_provider_400_fails_once_with_its_cause() -> None:
    """The provider answered 400: `session.step.failed` then `session.execution.failed`, both with
    `{type: "provider.invalid-request", message, status: 400}`: one failure, one alert, with the
    cause; the execution's echo makes no second one."""
    out = play(recorded("failure"))
    assert completed(out) == [(inboxes("failure")[0], Outcome.FAILED, "provider.invalid-request")]
    fired = [t for t in out if isinstance(t, Stalled)]
    assert [t.kind for t in fired] == [StallKind.FAILED]
    assert fired[0].error is not None
    assert (fired[0].error.name, fired[0].error.message) == (
        "provider.invalid-request",
        "measurement: bad request",
    )


@pytest.mark.parametrize(
    ("name", "replies"),
    [
        ("turn", [[("tool-calls", None), ("stop", None)]]),
        ("steer", [[("tool-calls", None)], [("stop", None)]]),
        ("interrupt", [[("error", "MessageAbortedError")]]),
        (
            "permission",
            [[("tool-calls", None), ("stop", None)], [("error", "MessageAbortedError")]],
        ),
        (
            "question",
            [[("tool-calls", None), ("stop", None)], [("error", "MessageAbortedError")]],
        ),
        ("failure", [[("error", "provider.invalid-request")]]),
    ],
)
def test_a_recorded_message_list_reads_as_the_stream_ended(
    name: str, replies: list[list[tuple[str, str | None]]]
) -> None:
    """The session's message list at its last terminal event (2.0.16's `message.list`, the shape
    of `GET /api/session/{id}/message` items) read by the recovery decoder: each user message is a
    prompt (its id the inbox id the stream enqueued), with its steps, every one completed, as the
    stream ended them; the `idle` rows are no prompts."""
    path = RECORDED / "messages" / f"{name}.jsonl"
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = decode_messages({"data": items}, newest_first=False)
    assert prompts is not None
    assert [p.message_id for p in prompts] == inboxes(name)
    assert [[(r.finish, r.error) for r in p.replies] for p in prompts] == replies
    assert all(r.completed and not r.running_tools for p in prompts for r in p.replies)
    newest_first = decode_messages({"data": items[::-1]}, newest_first=True)
    assert newest_first == prompts


# -- synthetic: built from the schema, never seen on a real server ---------------------------

SID = "ses_synthetic"


def ev(etype: str, ms: int, **data: Any) -> str:
    body = {"sessionID": SID, **data} if etype != "server.connected" else {}
    return json.dumps({"id": "evt_x", "created": ms, "type": etype, "data": body})


T0 = 1_790_000_000_000


def turn_start(inbox: str = "msg_a", at: int = T0, delivery: str = "steer") -> list[str]:
    return [
        ev("server.connected", at),
        ev(
            "session.inbox.enqueued",
            at + 1,
            inboxID=inbox,
            item={"type": "user", "delivery": delivery},
        ),
        ev("session.execution.started", at + 2),
        ev("session.inbox.delivered", at + 3, inboxID=inbox),
        ev("session.step.started", at + 4, assistantMessageID="msg_r1", agent="b", model={}),
    ]


def test_synthetic_hang_before_first_output_is_no_response_then_resolves() -> None:
    items = [
        *turn_start(),
        ev("session.step.streamed", T0 + 70_000, assistantMessageID="msg_r1"),
        ev("session.text.started", T0 + 80_000, assistantMessageID="msg_r1", ordinal=0),
        ev("session.step.ended", T0 + 80_001, assistantMessageID="msg_r1", finish="stop"),
        ev("session.execution.succeeded", T0 + 80_002),
    ]
    out = play(items)
    assert stalls(out) == [StallKind.NO_RESPONSE]
    assert [t.kind for t in out if isinstance(t, Resolved)] == [StallKind.NO_RESPONSE]
    assert endings(out) == [(Outcome.ANSWERED, "stop")]


def test_synthetic_silence_mid_reply_is_inactive() -> None:
    items = [
        *turn_start(),
        ev("session.text.delta", T0 + 1_000, assistantMessageID="msg_r1", ordinal=0, delta="x"),
        ev("session.text.delta", T0 + 62_000, assistantMessageID="msg_r1", ordinal=0, delta="x"),
    ]
    out = play(items)
    assert stalls(out) == [StallKind.INACTIVE]
    assert [t.kind for t in out if isinstance(t, Resolved)] == [StallKind.INACTIVE]


def test_synthetic_execution_ending_without_a_finished_step_drops_the_prompt() -> None:
    items = [
        *turn_start(),
        ev("session.text.delta", T0 + 100, assistantMessageID="msg_r1", ordinal=0, delta="x"),
        ev("session.execution.succeeded", T0 + 200),
    ]
    out = play(items)
    assert endings(out) == [(Outcome.DROPPED, "idle_before_finish")]
    assert stalls(out) == [StallKind.DROPPED]


def test_synthetic_failed_step_fails_with_its_cause_once() -> None:
    items = [
        *turn_start(),
        ev(
            "session.step.failed",
            T0 + 100,
            assistantMessageID="msg_r1",
            error={"type": "provider.rate-limit", "message": "429", "status": 429},
        ),
        ev(
            "session.execution.failed",
            T0 + 101,
            error={"type": "provider.rate-limit", "message": "429"},
        ),
    ]
    out = play(items)
    assert endings(out) == [(Outcome.FAILED, "provider.rate-limit")]
    assert stalls(out) == [StallKind.FAILED]  # the execution's echo invents no second prompt


def test_synthetic_interrupt_before_any_output_aborts() -> None:
    items = [*turn_start(), ev("session.execution.interrupted", T0 + 500, reason="user")]
    assert endings(play(items)) == [(Outcome.ABORTED, "MessageAbortedError")]


def test_synthetic_retry_keeps_the_first_response_clock_and_says_so() -> None:
    items = [
        *turn_start(),
        ev(
            "session.retry.scheduled",
            T0 + 1_000,
            assistantMessageID="msg_r1",
            attempt=2,
            at=T0 + 90_000,
            error={"type": "provider.overloaded", "message": "overloaded"},
        ),
        ev("session.text.started", T0 + 70_000, assistantMessageID="msg_r1", ordinal=0),
    ]
    out = play(items)
    fired = [t for t in out if isinstance(t, Stalled)]
    assert [t.kind for t in fired] == [StallKind.NO_RESPONSE]
    assert fired[0].retry is not None
    assert fired[0].retry.attempt == 2
    assert fired[0].retry.message == "overloaded"
    assert [t.kind for t in out if isinstance(t, Resolved)] == [StallKind.NO_RESPONSE]


def test_synthetic_queued_prompt_waits_for_its_own_execution() -> None:
    """A prompt queued behind a running one has no clock until its own execution delivers it;
    the first execution's end is no idle for it."""
    items = [
        *turn_start(),
        ev(
            "session.inbox.enqueued",
            T0 + 10,
            inboxID="msg_b",
            item={"type": "user", "delivery": "queue"},
        ),
        ev("session.text.started", T0 + 20, assistantMessageID="msg_r1", ordinal=0),
        ev("session.step.ended", T0 + 50_000, assistantMessageID="msg_r1", finish="stop"),
        ev("session.execution.succeeded", T0 + 50_001),
        ev("session.execution.started", T0 + 50_002),
        ev("session.inbox.delivered", T0 + 50_003, inboxID="msg_b"),
        ev("session.step.started", T0 + 50_004, assistantMessageID="msg_r2", agent="b", model={}),
        ev("session.text.started", T0 + 51_000, assistantMessageID="msg_r2", ordinal=0),
        ev("session.step.ended", T0 + 52_000, assistantMessageID="msg_r2", finish="stop"),
        ev("session.execution.succeeded", T0 + 52_001),
    ]
    out = play(items)
    done = [t for t in out if isinstance(t, Completed)]
    assert [(t.prompt.message_id, t.outcome) for t in done] == [
        ("msg_a", Outcome.ANSWERED),
        ("msg_b", Outcome.ANSWERED),
    ]
    assert stalls(out) == []


def test_synthetic_permission_wait_pauses_the_timers() -> None:
    items = [
        *turn_start(),
        ev("permission.asked", T0 + 100, id="per_1", action="shell", resources=[]),
        ev("session.text.started", T0 + 500_000, assistantMessageID="msg_r1", ordinal=0),
        ev("permission.replied", T0 + 500_001, requestID="per_1", reply="once"),
        ev("session.step.ended", T0 + 500_002, assistantMessageID="msg_r1", finish="stop"),
    ]
    out = play(items)
    assert stalls(out) == []
    assert endings(out) == [(Outcome.ANSWERED, "stop")]


def test_synthetic_cancelled_queued_prompt_in_an_idle_session_ends() -> None:
    items = [
        ev("server.connected", T0),
        ev(
            "session.inbox.enqueued",
            T0 + 1,
            inboxID="msg_q",
            item={"type": "user", "delivery": "queue"},
        ),
        ev("session.inbox.cancelled", T0 + 2, inboxID="msg_q"),
    ]
    assert endings(play(items)) == [(Outcome.NO_REPLY, "no_turn_started")]


def test_synthetic_input_is_no_prompt() -> None:
    line = V2Stream().decode(
        ev("session.inbox.enqueued", T0, inboxID="msg_s", item={"type": "synthetic"}), 0.0
    )
    assert line is not None
    assert isinstance(line.event, Ignored)
    assert line.event.known


def test_events_map_to_the_core_vocabulary() -> None:
    wire = V2Stream()

    def decode(data: str) -> object:
        line = wire.decode(data, 0.0)
        assert line is not None
        return line.event

    admitted = decode(
        json.dumps(
            {
                "type": "session.inbox.enqueued",
                "created": T0,
                "location": {"directory": "/p"},
                "data": {"sessionID": SID, "inboxID": "msg_a", "item": {"type": "user"}},
            }
        )
    )
    assert admitted == PromptAdmitted(SID, "msg_a", T0 / 1000.0, "/p")
    assert decode(ev("session.execution.started", T0)) == StatusChanged(SID, SessionRun.BUSY)
    decode(ev("session.inbox.delivered", T0, inboxID="msg_a"))
    opened = decode(
        ev(
            "session.step.started",
            T0,
            assistantMessageID="msg_r",
            agent="build",
            model={"id": "m", "providerID": "p"},
        )
    )
    assert opened == ReplyOpened(SID, "msg_r", "msg_a", provider="p", model="m")
    tool = decode(ev("session.tool.called", T0, assistantMessageID="msg_r", callID="c1"))
    assert tool == ToolProgress(SID, "msg_r", "c1", running=True)
    done = decode(ev("session.tool.success", T0, assistantMessageID="msg_r", id="c1"))
    assert done == ToolProgress(SID, "msg_r", "c1", running=False)
    asked = decode(
        json.dumps({"type": "form.created", "data": {"form": {"id": "frm_1", "sessionID": SID}}})
    )
    assert asked == HumanAsked(SID, "frm_1")
    assert decode(ev("form.cancelled", T0, id="frm_1")) == HumanAnswered(SID, "frm_1", True)
    assert decode(ev("permission.replied", T0, requestID="per_1", reply="reject")) == (
        HumanAnswered(SID, "per_1", rejected=True)
    )
    finished = decode(ev("session.step.ended", T0, assistantMessageID="msg_r", finish="stop"))
    assert isinstance(finished, ReplyFinished)
    assert finished.parent_id == "msg_a"
    failed = decode(ev("session.execution.failed", T0, error={"type": "x", "message": "y"}))
    assert failed == SessionFailed(SID, "x", "y")


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1, 2]",
        '{"data": {}}',
        '{"type": "session.text.delta", "data": []}',
        '{"type": "session.text.delta", "data": {"sessionID": 5}}',
        '{"type": "session.step.started", "data": {"sessionID": "s"}}',
        '{"type": "form.created", "data": {"form": "nope"}}',
        '{"type": "session.inbox.enqueued", "data": {"sessionID": "s", "inboxID": ""}}',
        '{"type": "session.tool.called", "data": {"sessionID": "s", "assistantMessageID": "m"}}',
    ],
)
def test_bad_input_is_malformed_never_an_exception(data: str) -> None:
    line = V2Stream().decode(data, 0.0)
    assert line is not None
    assert isinstance(line.event, Malformed)


def test_odd_values_are_read_safely() -> None:
    """An unusable time, a bool attempt, a huge error message: the event still decodes."""
    wire = V2Stream()
    admitted = wire.decode(
        json.dumps(
            {
                "type": "session.inbox.enqueued",
                "created": 1e300,
                "data": {"sessionID": SID, "inboxID": "msg_a", "item": {"type": "user"}},
            }
        ),
        0.0,
    )
    assert admitted is not None
    assert isinstance(admitted.event, PromptAdmitted)
    assert admitted.event.created_at is None
    retry = wire.decode(ev("session.retry.scheduled", T0, attempt=True, at="soon"), 0.0)
    assert retry is not None
    assert retry.event == StatusChanged(SID, SessionRun.RETRY)
    failed = wire.decode(
        ev("session.execution.failed", T0, error={"type": "x", "message": "m" * 5000}), 0.0
    )
    assert failed is not None
    assert isinstance(failed.event, SessionFailed)
    assert failed.event.message is not None
    assert len(failed.event.message) <= 300


# -- recordings: stripped of text, replayed to the same verdicts -----------------------------

PLACEHOLDERS = ("[prompt]", "[reply]", "[thinking]", "[command]", "[output]", "[question]")


@pytest.mark.parametrize("name", sorted(p.name.split(".")[0] for p in FIXTURES.glob("*.sse")))
def test_stripping_a_stream_removes_its_text_and_changes_no_event(name: str) -> None:
    """What `run --record` keeps of an OpenCode 2 line: no prompt, reply, command or answer, and
    the same events decoded from it."""
    items = sse_items(name)
    stripped = [json.dumps(strip_text(json.loads(d))) if d else d for d in items]
    for text in stripped:
        assert not any(p in text for p in PLACEHOLDERS), text[:120]
    plain, bare = V2Stream(), V2Stream()
    before = [plain.decode(d, 0.0) for d in items]
    after = [bare.decode(d, 0.0) for d in stripped]
    assert [line.event if line else None for line in after] == [
        line.event if line else None for line in before
    ]


@pytest.mark.parametrize(
    ("name", "outcomes"),
    [
        ("answered", {"answered": 1}),
        ("tools", {"answered": 1}),
        ("interrupted", {"aborted": 1}),
        ("steer-cancel", {"aborted": 1, "answered": 1}),
        ("execution-failed", {"failed": 1}),
    ],
)
def test_replay_reads_an_opencode_2_capture(name: str, outcomes: dict[str, int]) -> None:
    lines = (FIXTURES / f"{name}.api-event.sse").read_text(encoding="utf-8").splitlines()
    recording = read_file(lines)
    assert {r.api for r in recording} == {"v2"}
    assert analyse(recording, Timeouts()).outcomes == outcomes


def test_replay_reads_a_recorded_opencode_2_stream(tmp_path: Path) -> None:
    """A `run --record` file of `/api/event` (heartbeats recorded as empty data) replays too."""
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(path)
    wall = 1_790_000_000.0
    for i, data in enumerate(sse_items("steer-cancel")):
        recorder.write("oc2", "/api/event", data, wall + i, float(i))
    recorder.close()
    recording = list(read_recording(path.read_text().splitlines()))
    beats = sse_items("steer-cancel").count("")
    assert beats >= 1
    assert sum(isinstance(r.event, Heartbeat) for r in recording) == beats
    assert analyse(recording, Timeouts()).outcomes == {"aborted": 1, "answered": 1}


def test_synthetic_shutdown_after_an_aborted_step_without_a_refusal_hands_the_work_on() -> None:
    """SYNTHETIC (no real stream of a server stopping was seen): a step aborted and a "shutdown"
    interrupt with no rejected permission or dismissed form before it is OpenCode keeping the
    execution for its next boot, not the loop stopping. The aborted prompt ends aborted either
    way; a prompt enqueued after it waits for that resumed work and stalls when none comes,
    where after a refusal (test_after_a_rejection_ends_the_loop...) it would end no_reply."""
    aborted = {"type": "aborted", "message": "Tool execution interrupted"}
    items = [
        *turn_start(),
        ev("session.tool.failed", T0 + 100, assistantMessageID="msg_r1", id="c1", error=aborted),
        ev("session.step.failed", T0 + 101, assistantMessageID="msg_r1", error=aborted),
        ev("session.execution.interrupted", T0 + 102, reason="shutdown"),
        ev("session.inbox.enqueued", T0 + 1_000, inboxID="msg_b", item={"type": "user"}),
        ev("session.usage.updated", T0 + 400_000),
    ]
    out = play(items)
    assert completed(out)[0] == ("msg_a", Outcome.ABORTED, "MessageAbortedError")
    assert stalls(out) == [StallKind.NO_RESPONSE]
    assert [t.prompt.message_id for t in out if isinstance(t, Stalled)] == ["msg_b"]
