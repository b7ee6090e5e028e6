"""The probe's view of a real capture: its stored messages, its text parts, the server's errors.

`1.18.33/probe.global-event.sse` and `rest/probe-*.json` were recorded from `opencode serve` 1.18.33
while a probe session got a current-shape noReply prompt, a legacy-shape one (no ids, agent and
model), and one naming the agent `no-such-agent`.
"""

from __future__ import annotations

import json

from tests.conftest import FIXTURES
from watchdog.core.events import SessionSeen, StreamConnected
from watchdog.opencode.v1 import PROBE_TITLE, decode_line
from watchdog.opencode.v1_probe import (
    ErrorInfo,
    MessageInfo,
    PartText,
    decode_message_list,
    decode_probe_line,
    decode_session_info,
    decode_session_list,
)

CAPTURE = FIXTURES / "1.18.33" / "probe.global-event.sse"
REST = FIXTURES / "1.18.33" / "rest"


def lines() -> list[str]:
    text = CAPTURE.read_text(encoding="utf-8")
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def rest(name: str) -> object:
    return json.loads((REST / name).read_text(encoding="utf-8"))


def test_the_stream_shows_two_stored_messages_and_the_unknown_agent_error() -> None:
    decoded = [decode_probe_line(line, directory_scoped=False) for line in lines()]
    seen = [d for d in decoded if d is not None]
    assert isinstance(seen[0], StreamConnected)
    users = [d for d in seen if isinstance(d, MessageInfo)]
    assert [u.role for u in users] == ["user", "user"]
    texts = [d.text for d in seen if isinstance(d, PartText)]
    assert [t.split()[3] for t in texts] == ["AAAAAAAAAAAA", "BBBBBBBBBBBB"]  # nothing of CCC…
    errors = [d for d in seen if isinstance(d, ErrorInfo)]
    assert len(errors) == 2  # OpenCode publishes this one failure twice
    assert errors[0].name == "UnknownError"
    assert errors[0].message == (
        'Agent not found: "no-such-agent". Available agents: build, explore, general, plan'
    )
    assert errors[0].session_id == users[0].session_id
    assert all(e.message is None or len(e.message) <= 300 for e in errors)


def test_the_watch_sees_the_probe_title_on_the_stream() -> None:
    marked = {
        d.event.probe
        for line in lines()
        if (d := decode_line(line, directory_scoped=False)) is not None
        and isinstance(d.event, SessionSeen)
    }
    assert marked == {True}


def test_rest_answers_give_the_session_and_its_messages() -> None:
    created = decode_session_info(rest("probe-session-created.json"))
    assert created is not None
    assert created.title == PROBE_TITLE
    listed = decode_session_list(rest("probe-session-list-search.json"))
    assert [s.session_id for s in listed] == [created.session_id]
    messages = decode_message_list(rest("probe-session-messages.json"))
    assert [m.role for m in messages] == ["user", "user"]
    assert [m.texts[0].split()[3] for m in messages] == ["AAAAAAAAAAAA", "BBBBBBBBBBBB"]


def test_anything_else_is_not_for_the_probe() -> None:
    assert decode_probe_line("not json", directory_scoped=True) is None
    assert decode_probe_line('{"type": "session.idle"}', directory_scoped=True) is None
    assert decode_session_info([]) is None
    assert decode_message_list({"not": "a list"}) == []


def test_hostile_lines_are_not_for_the_probe_either() -> None:
    """Deep nesting and NaN never raise: the probe's reader skips them like any other line."""
    assert decode_probe_line("[" * 100_000 + "]" * 100_000, directory_scoped=True) is None
    assert decode_probe_line('{"type": "session.error", "x": NaN}', directory_scoped=True) is None
