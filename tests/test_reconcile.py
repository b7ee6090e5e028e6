"""Catching up over REST after (re)connecting: nothing missed, nothing counted twice."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import FIXTURES, capture
from tests.test_tracker import kinds
from watchdog.app.replay import replay
from watchdog.core.events import (
    PromptAdmitted,
    SessionRun,
    SessionSeen,
    SessionSnapshot,
    StatusChanged,
)
from watchdog.core.settings import Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Accepted, Completed, PromptState, Stalled, StallKind
from watchdog.io.reconcile import Reconciled, read_snapshots, read_state
from watchdog.io.source import ServerApi
from watchdog.opencode.v1_rest import decode_session_messages, decode_status_map

SHORT = Timeouts(first_response=5.0, inactivity=5.0, tool=60.0)
REST = FIXTURES / "1.18.33" / "rest"


def rest(name: str) -> Any:
    return json.loads((REST / f"{name}.json").read_text(encoding="utf-8"))


def snapshot(
    name: str,
    session_id: str,
    run: SessionRun,
    taken_at: float,
    *,
    restarted: bool = False,
    waiting_on: tuple[str, ...] = (),
) -> SessionSnapshot:
    status = None if run is SessionRun.IDLE else StatusChanged(session_id, run)
    return decode_session_messages(
        session_id,
        rest(name),
        status=status,
        taken_at=taken_at,
        restarted=restarted,
        waiting_on=waiting_on,
    )


def session_of(name: str) -> str:
    return str(rest(name)[0]["info"]["sessionID"])


def test_prompt_hanging_before_the_watchdog_started_stalls_with_its_real_age() -> None:
    """A busy session read at start-up is tracked from the user message's time.created."""
    sid = session_of("session-messages-hung")
    created = rest("session-messages-hung")[0]["info"]["time"]["created"] / 1000
    now = created + 42.0
    tracker = Tracker("test", SHORT)
    out = tracker.feed(snapshot("session-messages-hung", sid, SessionRun.BUSY, now), now)
    assert kinds(out) == ["accepted"]
    accepted = out[0]
    assert isinstance(accepted, Accepted)
    assert accepted.prompt.accepted_at == created
    stall = tracker.tick(now)
    assert kinds(stall) == ["stalled:no_response"]
    assert isinstance(stall[0], Stalled)
    assert stall[0].waited == pytest.approx(42.0)


def test_hang_mid_read_at_start_up_is_replying_and_can_go_inactive() -> None:
    """A reply with content but no end is `replying`; its inactivity clock starts at the read."""
    sid = session_of("session-messages-hung-mid")
    now = 2_000_000_000.0
    tracker = Tracker("test", SHORT)
    tracker.feed(snapshot("session-messages-hung-mid", sid, SessionRun.BUSY, now), now)
    assert [p.state for p in tracker.pending(now)] == [PromptState.REPLYING]
    assert kinds(tracker.tick(now + SHORT.inactivity)) == ["stalled:inactive"]


@pytest.mark.parametrize("scenario", ["server-restart", "server-kill9"])
def test_prompt_lost_in_a_server_restart_is_dropped_with_that_reason(scenario: str) -> None:
    """After the reconnect the session is idle and its reply never completed: dropped, server_restart."""
    recording = capture("1.18.33", scenario)
    tracker = Tracker("test", SHORT)
    replay(tracker, recording)
    assert tracker.pending_count == 1
    name = f"{scenario}-messages-after-restart"
    sid = session_of(name)
    later = recording[-1].at + 1
    out = tracker.feed(snapshot(name, sid, SessionRun.IDLE, later, restarted=True), later)
    assert kinds(out) == ["stalled:dropped", "completed:dropped"]
    completed = out[-1]
    assert isinstance(completed, Completed)
    assert completed.reason == "server_restart"
    assert tracker.pending_count == 0


def test_reading_an_answered_session_again_counts_nothing() -> None:
    """A reconnect after a normal reply re-reads it; no second acceptance, no second completion."""
    tracker = Tracker("test", SHORT)
    replay(tracker, capture("1.18.33", "normal"))
    sid = session_of("session-messages-answered")
    out = tracker.feed(snapshot("session-messages-answered", sid, SessionRun.IDLE, 1e10), 1e10)
    assert out == []


def test_reply_that_finished_while_disconnected_completes_once() -> None:
    """A prompt pending when the stream broke, answered meanwhile, completes once on the read."""
    recording = capture("1.18.33", "normal")
    tracker = Tracker("test", SHORT)
    first_reply = next(i for i, r in enumerate(recording) if r.type == "message.part.updated")
    replay(tracker, recording[:first_reply])
    assert tracker.pending_count == 1
    sid = session_of("session-messages-answered")
    now = recording[-1].at
    out = tracker.feed(snapshot("session-messages-answered", sid, SessionRun.IDLE, now), now)
    assert kinds(out) == ["first_response", "completed:answered"]


def test_known_reply_keeps_its_silence_clock() -> None:
    """Re-reading a hung-mid reply does not reset its inactivity timer (a read must not hide a stall)."""
    recording = capture("1.18.33", "hang-mid")
    tracker = Tracker("test", SHORT)
    replay(tracker, recording)
    deadline = tracker.next_deadline()
    sid = session_of("session-messages-hung-mid")
    later = recording[-1].at
    tracker.feed(snapshot("session-messages-hung-mid", sid, SessionRun.BUSY, later), later)
    assert tracker.next_deadline() == deadline


def test_stale_idle_read_does_not_drop_a_prompt_accepted_after_it_began() -> None:
    """The read began before the prompt arrived: its 'idle' says nothing about that prompt."""
    recording = capture("1.18.33", "hang")
    tracker = Tracker("test", SHORT)
    replay(tracker, recording)
    accepted_at = tracker.pending(0)[0].ref.accepted_at
    sid = session_of("session-messages-hung")
    stale = snapshot("session-messages-hung", sid, SessionRun.IDLE, accepted_at - 1)
    assert tracker.feed(stale, accepted_at + 1) == []
    assert tracker.pending_count == 1


def test_permission_pending_at_reconnect_blocks_the_prompt() -> None:
    """A pending permission request listed by REST makes the prompt blocked, timers paused."""
    sid = session_of("session-messages-waiting-permission")
    now = 2_000_000_000.0
    tracker = Tracker("test", SHORT)
    snap = snapshot(
        "session-messages-waiting-permission", sid, SessionRun.BUSY, now, waiting_on=("per_1",)
    )
    tracker.feed(snap, now)
    assert [p.state for p in tracker.pending(now)] == [PromptState.BLOCKED]
    assert tracker.next_deadline() is None


def test_retry_status_is_carried_into_the_stall() -> None:
    """A session read in retry is `retrying`, and its stall says which attempt."""
    status = decode_status_map(rest("session-status-retry-samples")[0]["body"])
    (sid, retry), *_ = status.items()
    now = 2_000_000_000.0
    snap = decode_session_messages(
        sid, rest("session-messages-retrying"), status=retry, taken_at=now
    )
    tracker = Tracker("test", SHORT)
    tracker.feed(snap, now)
    assert [p.state for p in tracker.pending(now)] == [PromptState.RETRYING]
    stall = tracker.tick(now + 600)
    assert isinstance(stall[0], Stalled)
    assert stall[0].kind is StallKind.NO_RESPONSE
    assert stall[0].retry is not None
    assert stall[0].retry.attempt == 2


def test_read_snapshots_asks_each_directory_and_the_busy_sessions() -> None:
    """REST answers are per directory: status is read for each known directory, with its name."""
    hung = rest("session-messages-hung")
    sid = hung[0]["info"]["sessionID"]
    calls: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        directory = request.url.params.get("directory")
        calls.append((request.url.path, directory))
        if request.url.path == "/project":
            return httpx.Response(200, json=[{"worktree": "/"}, {"worktree": "/srv/b"}])
        if request.url.path == "/session/status":
            return httpx.Response(
                200, json={sid: {"type": "busy"}} if directory == "/srv/b" else {}
            )
        if request.url.path in ("/permission", "/question"):
            return httpx.Response(200, json=[])
        if request.url.path == f"/session/{sid}/message":
            assert request.url.params.get("limit") == "20"
            return httpx.Response(200, json=hung)
        return httpx.Response(404)

    async def main() -> list[SessionSnapshot]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await read_snapshots(
                ServerApi(client, "http://oc.test"),
                known_directories=["/srv/a"],
                tracked={},
                taken_at=1.0,
                restarted=False,
            )

    snaps = anyio.run(main)
    assert [(s.session_id, s.run, s.directory) for s in snaps] == [(sid, SessionRun.BUSY, "/srv/b")]
    status_dirs = [d for path, d in calls if path == "/session/status"]
    assert status_dirs == [None, "/srv/b", "/srv/a"]
    assert (f"/session/{sid}/message", "/srv/b") in calls


# -- a REST read that fails says "unknown", never "idle" or "nobody waits" (issue 16) ---------


def rest_reader(
    answers: dict[str, Any], calls: list[tuple[str, str | None]] | None = None
) -> httpx.MockTransport:
    """A server answering each path from ``answers``: a body (200) or an int (that status)."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if calls is not None:
            calls.append((path, request.url.params.get("directory")))
        answer = answers.get(path, answers.get("*", 404))
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, int):
            return httpx.Response(answer, json={"name": "UnknownError"})
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handler)


def read_with(
    transport: httpx.MockTransport, tracker: Tracker, taken_at: float, *, restarted: bool
) -> list[SessionSnapshot]:
    async def main() -> list[SessionSnapshot]:
        async with httpx.AsyncClient(transport=transport) as client:
            return await read_snapshots(
                ServerApi(client, "http://oc.test"),
                known_directories=tracker.directories(),
                tracked=tracker.pending_sessions(),
                taken_at=taken_at,
                restarted=restarted,
            )

    return anyio.run(main)


def test_a_failed_status_read_after_a_restart_drops_nothing() -> None:
    """Item 1: a prompt pending in a busy session, the stream cut, `GET /session/status` 503
    during the reconnect's read. Once the missing status was read as idle and the prompt ended
    `dropped` (server_restart), a final false page. Now the status is unknown: nothing changes,
    and the prompt still stalls when its time comes."""
    hung = rest("session-messages-hung")
    sid = session_of("session-messages-hung")
    now = 2_000_000_000.0
    tracker = Tracker("test", SHORT)
    tracker.feed(snapshot("session-messages-hung", sid, SessionRun.BUSY, now), now)
    assert tracker.pending_count == 1
    transport = rest_reader({"/session/status": 503, f"/session/{sid}/message": hung, "*": []})
    snaps = read_with(transport, tracker, now + 1, restarted=True)
    assert [(s.session_id, s.run) for s in snaps] == [(sid, None)]
    out = tracker.feed(snaps[0], now + 1.2)
    assert kinds(out) == []
    assert tracker.pending_count == 1
    assert kinds(tracker.tick(now + SHORT.first_response + 1)) == ["stalled:no_response"]


def test_a_failed_permission_read_keeps_the_wait() -> None:
    """Item 2: a prompt blocked on a permission still pending; on the reconnect `GET /permission`
    and `/question` answer 500. The empty list once cleared the wait and `inactive` fired 2.7 s
    later; now the wait is unknown, kept, and no clock runs."""
    sid = session_of("session-messages-waiting-permission")
    messages = rest("session-messages-waiting-permission")
    now = 2_000_000_000.0
    tracker = Tracker("test", SHORT)
    tracker.feed(
        snapshot(
            "session-messages-waiting-permission",
            sid,
            SessionRun.BUSY,
            now,
            waiting_on=("per_1",),
        ),
        now,
    )
    assert [p.state for p in tracker.pending(now)] == [PromptState.BLOCKED]
    transport = rest_reader(
        {
            "/session/status": {sid: {"type": "busy"}},
            "/permission": 500,
            "/question": 500,
            f"/session/{sid}/message": messages,
            "*": [],
        }
    )
    snaps = read_with(transport, tracker, now + 1, restarted=True)
    assert [(s.run, s.waiting_on) for s in snaps] == [(SessionRun.BUSY, None)]
    tracker.feed(snaps[0], now + 1.2)
    assert [p.state for p in tracker.pending(now + 1.2)] == [PromptState.BLOCKED]
    assert tracker.next_deadline() is None
    assert kinds(tracker.tick(now + 3600)) == []


def test_an_older_server_without_question_still_lists_its_permissions() -> None:
    """`/question` answering 404 (a version without it) is an empty list, not a failed read."""
    sid = session_of("session-messages-waiting-permission")
    now = 2_000_000_000.0
    tracker = Tracker("test", SHORT)
    tracker.feed(snapshot("session-messages-waiting-permission", sid, SessionRun.BUSY, now), now)
    transport = rest_reader(
        {
            "/session/status": {sid: {"type": "busy"}},
            "/permission": [{"id": "per_9", "sessionID": sid}],
            "/question": 404,
            f"/session/{sid}/message": rest("session-messages-waiting-permission"),
            "*": [],
        }
    )
    snaps = read_with(transport, tracker, now + 1, restarted=True)
    assert [s.waiting_on for s in snaps] == [("per_9",)]


def test_sessions_in_directories_past_the_cap_are_unknown_not_idle() -> None:
    """Item 1, second half: sessions in directories beyond the reconcile's cap (32) once got the
    idle treatment and were dropped. The directories of tracked prompts are read first now, and
    whatever still lies past the cap has an unknown status: 40 busy sessions in 40 directories,
    none dropped."""
    now = 2_000_000_000.0
    tracker = Tracker("test", SHORT)
    messages: dict[str, Any] = {}
    for i in range(40):
        sid, mid, directory = f"ses_{i:02d}", f"msg_{i:02d}", f"/srv/p{i:02d}"
        created = now - 100 + i
        tracker.feed(SessionSeen(sid, None, directory), now - 50)
        tracker.feed(PromptAdmitted(sid, mid, created, directory), now - 50)
        tracker.feed(StatusChanged(sid, SessionRun.BUSY), now - 50)
        messages[f"/session/{sid}/message"] = [
            {
                "info": {
                    "id": mid,
                    "role": "user",
                    "sessionID": sid,
                    "time": {"created": created * 1000},
                },
                "parts": [],
            }
        ]

    def status(request: httpx.Request) -> dict[str, Any]:
        directory = request.url.params.get("directory") or ""
        return {f"ses_{directory[-2:]}": {"type": "busy"}} if directory else {}

    calls: list[tuple[str, str | None]] = []
    project = [{"worktree": f"/srv/other{i}"} for i in range(10)]
    transport = rest_reader(
        {"/project": project, "/session/status": status, **messages, "*": []}, calls
    )
    snaps = read_with(transport, tracker, now, restarted=True)
    runs = sorted((s.session_id, s.run) for s in snaps)
    assert [r for _, r in runs].count(SessionRun.BUSY) == 31  # 32 directories: None and 31 of ours
    assert [r for _, r in runs].count(None) == 9
    status_dirs = [d for path, d in calls if path == "/session/status"]
    assert not any(d and d.startswith("/srv/other") for d in status_dirs)
    out = [t for snap in snaps for t in tracker.feed(snap, now + 1)]
    assert "stalled:dropped" not in kinds(out)
    assert tracker.pending_count == 40


def test_read_state_names_every_failure() -> None:
    """Each failed read is reported with what it was and where, for the log and the counter."""
    sid = session_of("session-messages-hung")
    transport = rest_reader(
        {
            "/session/status": {sid: {"type": "busy"}},
            "/permission": 502,
            "/question": [],
            f"/session/{sid}/message": 500,
            "*": [],
        }
    )

    async def main() -> Reconciled:
        async with httpx.AsyncClient(transport=transport) as client:
            return await read_state(
                ServerApi(client, "http://oc.test"),
                known_directories=[],
                tracked={},
                taken_at=1.0,
                restarted=False,
            )

    state = anyio.run(main)
    assert state.snapshots == []  # no messages: no snapshot (an idle read could drop it)
    assert [(f.what, f.where) for f in state.failures] == [
        ("permission", None),
        ("messages", sid),
    ]
    assert "answered HTTP 502" in state.failures[0].error
