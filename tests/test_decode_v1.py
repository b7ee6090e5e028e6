"""The OpenCode 1.x decoder: real captures decode cleanly, bad input becomes data, never an exception."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FIXTURES, VERSIONS
from watchdog.core.events import (
    HumanAsked,
    Ignored,
    Malformed,
    PromptAdmitted,
    ReplyFinished,
    ReplyOpened,
    SessionRun,
    StatusChanged,
    StreamConnected,
)
from watchdog.opencode.ids import event_time
from watchdog.opencode.v1 import decode_event, decode_line
from watchdog.opencode.v1_rest import decode_session_messages, decode_status_map
from watchdog.opencode.wire import parse_json


def data_lines(path: str) -> list[str]:
    text = (FIXTURES / path).read_text(encoding="utf-8")
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_captured_event_decodes(version: str) -> None:
    """No event in any reference capture is malformed or of an unknown type."""
    for path in sorted((FIXTURES / version).glob("*.sse")):
        scoped = path.name.endswith(".event.sse")
        for data in data_lines(f"{version}/{path.name}"):
            decoded = decode_line(data, directory_scoped=scoped)
            if decoded is None:
                continue
            event = decoded.event
            assert not isinstance(event, Malformed), (path.name, event)
            assert not (isinstance(event, Ignored) and not event.known), (path.name, event)


def test_first_event_is_server_connected() -> None:
    """Both streams open with `server.connected`."""
    for stream in ("event", "global-event"):
        first = data_lines(f"1.18.33/normal.{stream}.sse")[0]
        decoded = decode_line(first, directory_scoped=stream == "event")
        assert decoded is not None
        assert isinstance(decoded.event, StreamConnected)


def test_global_sync_duplicates_are_skipped_and_directory_is_kept() -> None:
    """`/global/event` sync payloads return None; others carry the wrapper's directory."""
    lines = data_lines("1.18.33/normal.global-event.sse")
    sync = [d for d in lines if '"type":"sync"' in d]
    assert sync
    assert all(decode_line(d, directory_scoped=False) is None for d in sync)
    admitted = [
        r
        for d in lines
        if (r := decode_line(d, directory_scoped=False)) and isinstance(r.event, PromptAdmitted)
    ]
    assert len(admitted) == 1
    assert admitted[0].directory == "/srv/opencode-capture/proj/1.18.33"
    assert admitted[0].type == "message.updated"
    event = admitted[0].event
    assert isinstance(event, PromptAdmitted)
    assert event.directory == admitted[0].directory


def test_user_message_resend_with_summary_is_not_an_admission() -> None:
    """The re-sent user message (with summary.diffs) after a run is not a new prompt."""
    info = {"id": "msg_1", "role": "user", "sessionID": "ses_1", "time": {"created": 1}}
    admitted = decode_event({"type": "message.updated", "properties": {"info": info}})
    resent = decode_event(
        {"type": "message.updated", "properties": {"info": {**info, "summary": {"diffs": []}}}}
    )
    assert isinstance(admitted, PromptAdmitted)
    assert admitted.created_at == 0.001
    assert isinstance(resent, Ignored)


def test_assistant_messages_open_and_finish() -> None:
    """An assistant without time.completed opens a reply; with it, finishes it with finish/error."""
    info = {
        "id": "msg_a",
        "role": "assistant",
        "sessionID": "ses_1",
        "parentID": "msg_u",
        "providerID": "fake",
        "modelID": "fake-1",
        "time": {"created": 1},
    }
    opened = decode_event({"type": "message.updated", "properties": {"info": info}})
    assert opened == ReplyOpened("ses_1", "msg_a", "msg_u", provider="fake", model="fake-1")
    done = {**info, "time": {"created": 1, "completed": 2}, "error": {"name": "APIError"}}
    finished = decode_event({"type": "message.updated", "properties": {"info": done}})
    assert finished == ReplyFinished(
        "ses_1", "msg_a", "msg_u", finish=None, error="APIError", provider="fake", model="fake-1"
    )


def test_retry_status_carries_attempt_message_and_next() -> None:
    """`session.status` retry keeps attempt, message and next (ms → s)."""
    event = decode_event(
        {
            "type": "session.status",
            "properties": {
                "sessionID": "ses_1",
                "status": {"type": "retry", "attempt": 2, "message": "boom", "next": 5000},
            },
        }
    )
    assert event == StatusChanged("ses_1", SessionRun.RETRY, 2, "boom", 5.0)


def test_question_asked_blocks_like_a_permission() -> None:
    """`question.asked` is a wait for a person, decoded like `permission.asked`."""
    event = decode_event(
        {"type": "question.asked", "properties": {"id": "que_1", "sessionID": "ses_1"}}
    )
    assert event == HumanAsked("ses_1", "que_1")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"properties": {}}', "missing type"),
        ('{"type": "message.updated", "properties": []}', "properties is not an object"),
        ('{"type": "message.updated", "properties": {}}', "info is not an object"),
        (
            '{"type": "session.status", "properties": {"sessionID": "s", "status": {"type": "x"}}}',
            "unknown session status 'x'",
        ),
        (
            '{"type": "message.part.delta", "properties": {"sessionID": 3}}',
            "sessionID is not a non-empty string",
        ),
    ],
)
def test_malformed_events_become_data(data: str, reason: str) -> None:
    """Bad JSON or missing fields give a Malformed event naming the problem, not an exception."""
    decoded = decode_line(data, directory_scoped=True)
    assert decoded is not None
    assert isinstance(decoded.event, Malformed)
    assert decoded.event.reason == reason


def test_unknown_event_types_are_ignored_not_rejected() -> None:
    """OpenCode adds event types every release; an unknown one is Ignored(known=False)."""
    event = decode_event({"type": "shiny.new.thing", "properties": {"x": 1}})
    assert event == Ignored(type="shiny.new.thing", known=False)


def test_malformed_reason_never_contains_prompt_text() -> None:
    """A bad event's reason names fields, never values such as the prompt text."""
    secret = "my secret prompt"
    bad = {"type": "message.updated", "properties": {"info": {"role": secret}}}
    event = decode_event(json.loads(json.dumps(bad)))
    assert isinstance(event, Malformed)
    assert secret not in event.reason


def test_event_time_restores_the_epoch_from_an_event_id() -> None:
    """An `evt_` id's 12 hex digits give its creation time modulo 2**36 ms; ``near`` fills the rest."""
    created_ms = 1_796_078_307_070
    event_id = f"evt_{(created_ms * 4096 + 1) % 2**48:012x}3ctEXXd6RK4zx4"
    assert event_time(event_id, near=created_ms / 1000 + 5.0) == created_ms / 1000
    assert event_time(event_id, near=created_ms / 1000 - 5.0) == created_ms / 1000
    assert event_time("msg_nothex", near=1.0) is None
    assert event_time("evt_zzzzzzzzzzzz", near=1.0) is None
    assert event_time(None, near=1.0) is None


def _admission(created: str) -> str:
    return (
        '{"type": "message.updated", "properties": {"info": {"role": "user", "sessionID": "s",'
        f' "id": "m", "time": {{"created": {created}}}}}}}}}'
    )


def _retry(next_ms: str) -> str:
    return (
        '{"type": "session.status", "properties": {"sessionID": "s", "status":'
        f' {{"type": "retry", "attempt": 1, "message": "m", "next": {next_ms}}}}}}}'
    )


@pytest.mark.parametrize(
    "data",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        _admission("NaN"),
        _admission("Infinity"),
        _admission("-Infinity"),
        _retry("1" + "0" * 400),
        _retry("NaN"),
        _retry("1e300"),
        _retry("-5"),
    ],
    ids=[
        "nested-list",
        "nested-object",
        "nan-created",
        "inf-created",
        "minus-inf-created",
        "400-digit-next",
        "nan-next",
        "1e300-next",
        "negative-next",
    ],
)
def test_hostile_values_are_malformed_not_exceptions(data: str) -> None:
    """Deep nesting, NaN (not JSON) and impossible retry times give Malformed; never raises."""
    for scoped in (True, False):
        line = data if scoped else '{"directory": "/d", "payload": ' + data + "}"
        decoded = decode_line(line, directory_scoped=scoped)
        assert decoded is not None
        assert isinstance(decoded.event, Malformed)


@pytest.mark.parametrize(
    "created",
    ["1" + "0" * 400, "99999999999999999999", "1e300", "1e400", "-1e300", "-1", '"yesterday"'],
)
def test_a_user_message_whose_time_is_no_usable_time_is_still_a_prompt(created: str) -> None:
    """A valid JSON number that is no time (or no number at all) does not drop the prompt: it is
    admitted without a server time, and the core times it from its arrival."""
    for scoped in (True, False):
        data = _admission(created)
        line = data if scoped else '{"directory": "/d", "payload": ' + data + "}"
        decoded = decode_line(line, directory_scoped=scoped)
        assert decoded is not None
        assert decoded.event == PromptAdmitted("s", "m", None, directory=None if scoped else "/d")


def test_usable_times_still_decode_in_seconds() -> None:
    """The guards keep real millisecond times: 1764067783936 ms is that many seconds / 1000."""
    decoded = decode_line(_admission("1764067783936"), directory_scoped=True)
    assert decoded is not None
    assert isinstance(decoded.event, PromptAdmitted)
    assert decoded.event.created_at == 1764067783.936


def test_snapshot_reading_skips_hostile_messages() -> None:
    """A REST message list with impossible times skips those messages and keeps the good one."""
    body = [
        {"info": {"role": "user", "id": "m1", "time": {"created": 10**400}}, "parts": []},
        {"info": {"role": "user", "id": "m2", "time": {"created": float("nan")}}, "parts": []},
        {"info": {"role": "user", "id": "m3", "time": {"created": 1764067783936}}, "parts": []},
        {
            "info": {"role": "assistant", "id": "a", "parentID": "m3", "time": {"created": 1}},
            "parts": [{"type": "tool", "callID": 10**400, "state": {"status": "running"}}],
        },
    ]
    snapshot = decode_session_messages("s", body, status=None, taken_at=0.0)
    # A prompt whose time is no usable time is still a prompt, timed when it is found.
    assert [(p.message_id, p.created_at) for p in snapshot.prompts or ()] == [
        ("m1", None),
        ("m2", None),
        ("m3", 1764067783.936),
    ]


def test_snapshot_status_with_huge_next_is_left_out() -> None:
    """`/session/status` with a 400-digit retry time leaves that entry out instead of raising."""
    body = {"s": {"type": "retry", "attempt": 1, "message": "m", "next": 10**400}}
    assert decode_status_map(body) == {}


def test_parse_json_rejects_deep_nesting_and_nan() -> None:
    """REST bodies go through parse_json, which turns RecursionError and NaN into ValueError."""
    for text, problem in [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("NaN", "NaN is not JSON"),
        ('{"x": Infinity}', "Infinity is not JSON"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_json(text)
    assert parse_json('{"x": [1, 2.5]}') == {"x": [1, 2.5]}
