"""Recent problems everywhere: the ring of stalls and failures in `/status`, on the page and in
`status` (its table and its exit code, `--since`), with the server's error as the cause."""

from __future__ import annotations

import argparse
import io
import json
import socket
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from tests.conftest import wait_for
from tests.pagedom import PageDom
from tests.test_daemon import SSE, daemon_for, frames, hold_open
from watchdog.app import statusview
from watchdog.app.statusview import problems, render
from watchdog.core.events import PromptAdmitted, ReplyOpened, SessionFailed, SessionRun
from watchdog.core.events import StatusChanged as Status
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import (
    Completed,
    ErrorInfo,
    Outcome,
    PromptRef,
    Resolved,
    Stalled,
    StallKind,
)
from watchdog.sinks.recent import RecentIncidents

AGENT_MESSAGE = 'Agent not found: "no-such-agent". Available agents: build, explore, general, plan'


def test_an_incident_fires_until_resolved_or_ended() -> None:
    recent = RecentIncidents()
    ref = PromptRef("s", "ses_a", "msg_a", 100.0)
    recent.emit(Stalled(ref, StallKind.NO_RESPONSE, 130.0, 30.0))
    assert [i.firing for i in recent.latest()] == [True]
    recent.emit(Resolved(ref, StallKind.NO_RESPONSE, 140.0, 40.0))
    assert [i.firing for i in recent.latest()] == [False]
    failed = PromptRef("s", "ses_b", None, 150.0)
    error = ErrorInfo("UnknownError", AGENT_MESSAGE)
    recent.emit(Stalled(failed, StallKind.FAILED, 150.0, 0.0, reason="UnknownError", error=error))
    recent.emit(Completed(failed, Outcome.FAILED, 150.0, 0.0))
    newest = recent.latest()[0]
    assert (newest.firing, newest.outcome) == (False, "failed")
    assert newest.cause == f"UnknownError: {AGENT_MESSAGE}"


def test_a_failure_before_it_was_stored_names_the_sessions_last_model() -> None:
    """Nothing stored says nothing of the model: the session's latest reply named one."""
    tracker = Tracker("s")
    tracker.feed(PromptAdmitted("ses_a", "msg_1", 10.0), 10.0)
    tracker.feed(Status("ses_a", SessionRun.BUSY), 10.0)
    tracker.feed(ReplyOpened("ses_a", "msg_r", "msg_1", "fake", "fake-1"), 10.5)
    tracker.feed(Status("ses_a", SessionRun.IDLE), 12.0)
    out = tracker.feed(SessionFailed("ses_a", "UnknownError", AGENT_MESSAGE), 100.0)
    [stall] = [t for t in out if isinstance(t, Stalled)]
    assert (stall.prompt.message_id, stall.prompt.provider, stall.prompt.model) == (
        None,
        "fake",
        "fake-1",
    )
    fresh = Tracker("s").feed(SessionFailed("ses_b", "UnknownError", AGENT_MESSAGE), 1.0)
    [unknown] = [t for t in fresh if isinstance(t, Stalled)]
    assert (unknown.prompt.provider, unknown.prompt.model) == (None, None)


def document(*recent: dict[str, Any], now: str = "2026-11-30T12:30:00.000Z") -> dict[str, Any]:
    server = {"server": "laptop", "stream": {"state": "up"}, "pending": [], "probes": []}
    return {"version": "1", "now": now, "servers": [server], "recent": list(recent)}


def item(kind: str, at: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "at": at,
        "waited_seconds": 0.0,
        "server": "laptop",
        "session_id": "ses_a",
        "message_id": None,
        "firing": False,
        "outcome": "failed" if kind == "failed" else None,
        **extra,
    }


def test_a_failure_within_since_is_a_problem_and_an_older_one_is_not() -> None:
    """Failed and dropped prompts count within the window; their time is the document's."""
    failed = item("failed", "2026-11-30T12:20:00.000Z")
    assert problems(document(failed)) == ["laptop: prompt in session ses_a failed 10m00s ago"]
    assert problems(document(failed), since=300.0) == []
    dropped = item("dropped", "2026-11-30T12:29:00.000Z", message_id="msg_d", outcome="dropped")
    assert problems(document(dropped), since=300.0) == ["laptop: prompt msg_d dropped 1m00s ago"]


def test_a_firing_stall_is_a_problem_until_it_resolves() -> None:
    firing = item("no_response", "2026-11-30T12:00:00.000Z", message_id="msg_a", firing=True)
    assert problems(document(firing)) == ["laptop: no_response stall firing for prompt msg_a"]
    resolved = {**firing, "firing": False, "resolved_at": "2026-11-30T12:01:00.000Z"}
    assert problems(document(resolved)) == []


def test_status_prints_recent_problems_with_cause_and_model() -> None:
    cause = {
        "name": "UnknownError",
        "message": AGENT_MESSAGE,
        "text": f"UnknownError: {AGENT_MESSAGE}",
    }
    failed = item("failed", "2026-11-30T12:29:50.000Z", cause=cause, provider="fake", model="f-1")
    text = render(document(failed))
    assert "RECENT PROBLEMS (1, newest first)" in text
    [row] = [line for line in text.splitlines() if line.startswith("failed")]
    assert row.split() == [
        "failed",
        "10.0s",
        "ago",
        "0.0s",
        "ended",
        "failed",
        "laptop",
        "ses_a",
        "-",
        "fake/f-1",
        *f"UnknownError: {AGENT_MESSAGE}".split(),
    ]
    assert "PROBLEM: laptop: prompt in session ses_a failed 10.0s ago" in text
    assert "ok: every stream is up" in render(document())


def test_status_that_cannot_reach_the_daemon_asks_whether_it_runs() -> None:
    err = io.StringIO()
    with socket_nobody_listens_on() as port:
        args = argparse.Namespace(url=f"http://127.0.0.1:{port}", json=False, since=900.0)
        code = statusview.main(args, out=io.StringIO(), err=err)
    assert code == statusview.EXIT_UNREADABLE
    assert err.getvalue() == (
        f"opencode-watchdog status: cannot read http://127.0.0.1:{port}/status "
        "(connection refused): is the daemon running? (--url)\n"
    )


class socket_nobody_listens_on:  # noqa: N801 - used as a context manager, like a function
    """A port bound and not listening: a connection to it is refused."""

    def __enter__(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *_: object) -> None:
        self._sock.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_seed_failure_is_in_status_on_the_page_and_in_the_exit_code() -> None:
    """The unknown agent's `session.error` (nothing stored) reaches `/status`'s recent problems
    with the server's message, the page's failed row shows it, the session shows as failed,
    and `status` exits 1 because it happened within 15 minutes."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/global/event", "/event"):
            chunks = [f for f in frames("unknown-agent") if b"server.heartbeat" not in f]
            return httpx.Response(200, headers=SSE, content=hold_open(chunks))
        return httpx.Response(200, json=[])

    daemon = daemon_for(handler)
    out, err = io.StringIO(), io.StringIO()
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            port = await tg.start(daemon.run)
            await wait_for(
                lambda: any(e.get("outcome") == "answered" for e in logs), "the later answer"
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                status = (await client.get("/status")).json()
                page = PageDom((await client.get("/")).text)
            args = argparse.Namespace(url=f"http://127.0.0.1:{port}", json=False, since=900.0)
            code = await anyio.to_thread.run_sync(lambda: statusview.main(args, out, err))
            tg.cancel_scope.cancel()
    [failure] = status["recent"]
    assert failure["kind"] == "failed"
    assert failure["message_id"] is None
    assert failure["cause"]["name"] == "UnknownError"
    assert failure["cause"]["message"] == AGENT_MESSAGE
    assert (failure["firing"], failure["outcome"]) == (False, "failed")
    [row] = page.of("incident")
    assert row.cells["cause"] == f"UnknownError: {AGENT_MESSAGE}"
    assert row.cells["message"] == "not stored"
    # The session is listed with nothing pending: idle after its later answer, failed before.
    [session] = status["servers"][0]["sessions"]
    assert session["session_id"] == failure["session_id"]
    assert (session["state"], session["pending"], session["last_outcome"]) == (
        "idle",
        0,
        "answered",
    )
    assert [h["state"] for h in session["history"]] == ["failed", "working", "idle"]
    assert [r.attrs["data-state"] for r in page.of("session")] == ["idle"]
    assert code == statusview.EXIT_PROBLEM, err.getvalue()
    assert AGENT_MESSAGE in out.getvalue()
    assert "PROBLEM: oc: prompt in session" in out.getvalue()
    assert json.dumps(status).count("s3cret-pw") == 0


def test_status_shows_which_api_each_server_speaks() -> None:
    doc = document()
    doc["servers"][0]["api"] = "v2"
    assert "laptop  v2   up" in render(doc)
    doc["servers"][0]["api"] = None  # api auto, not asked yet
    assert "laptop  -    up" in render(doc)


def test_status_says_an_unstored_failure_named_no_model() -> None:
    failed = item("failed", "2026-11-30T12:29:50.000Z")
    [row] = [line for line in render(document(failed)).splitlines() if line.startswith("failed")]
    assert "unknown (not stored)" in row
