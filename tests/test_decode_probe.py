"""The probe's view of a real capture: its stored messages, its text parts, the server's errors.

`1.18.33/probe.global-event.sse` and `rest/probe-*.json` were recorded from `opencode serve` 1.18.33
while a probe session got a current-shape noReply prompt, a legacy-shape one (no ids, agent and
model), and one naming the agent `no-such-agent`.
"""

from __future__ import annotations

import json

import anyio
import httpx

from tests.conftest import FIXTURES
from watchdog.core.events import SessionSeen, StreamConnected
from watchdog.io.probe import ProbeSessions, find_probe_sessions
from watchdog.io.source import ServerApi
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


def test_a_huge_or_odd_updated_time_is_no_time_not_an_error() -> None:
    """A 400-digit ``time.updated`` once raised OverflowError (``float(updated)``): through
    find_probe_sessions it stopped the reconcile of that connection, in the prober it left
    probe_success at its last value. It is no usable time, as in the stream decoder."""
    for updated in (10**400, -(10**400), float("nan"), float("inf"), True, "17"):
        info = decode_session_info({"id": "ses_1", "title": "t", "time": {"updated": updated}})
        assert info is not None
        assert info.updated_at is None
    found = decode_session_list(
        [
            {"id": "ses_huge", "title": PROBE_TITLE, "time": {"updated": 10**400}},
            {"id": "ses_ok", "title": PROBE_TITLE, "time": {"updated": 1_700_000_000_000}},
        ]
    )
    assert [(s.session_id, s.updated_at) for s in found] == [
        ("ses_huge", None),
        ("ses_ok", 1_700_000_000.0),
    ]


def test_find_probe_sessions_marks_probe_sessions_despite_a_huge_time() -> None:
    """The REST read after a (re)connect runs find_probe_sessions first: a huge number there
    must not raise out of it (it would stop that connection's reconcile)."""
    body = json.dumps(
        [{"id": "ses_probe", "title": PROBE_TITLE, "time": {"updated": 10**400}}]
    ).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    sessions = ProbeSessions()

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await find_probe_sessions(ServerApi(client, "http://oc.test"), [None], sessions)

    anyio.run(main)
    assert "ses_probe" in sessions
