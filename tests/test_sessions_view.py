"""Sessions on the page and in `/status`: every recent session (idle and finished ones too), most
recent first, its state in plain words, last activity, pending count, last outcome, history."""

from __future__ import annotations

from tests.conftest import run
from tests.pagedom import PageDom
from watchdog.app.page import MAX_SESSIONS, PageView, ServerView, render
from watchdog.app.statusview import render as render_status
from watchdog.app.views import session_doc, sessions_doc
from watchdog.core.events import HumanAsked, PromptAdmitted, SessionRun, StatusChanged
from watchdog.core.settings import Timeouts
from watchdog.core.tracker import Tracker

TIMEOUTS = Timeouts(first_response=5.0, inactivity=5.0)
WALL = 1_795_596_700.0


def server(tracker: Tracker, now: float, wall: float = WALL) -> ServerView:
    return ServerView(
        name="laptop",
        url="http://127.0.0.1:4096",
        state="up",
        since=None,
        last_event_at=None,
        last_error=None,
        reconnects=0,
        pending=tracker.pending(now),
        sessions=tracker.sessions(now, wall),
    )


def page(tracker: Tracker, now: float, wall: float = WALL) -> PageDom:
    return PageDom(render(PageView("9.9.9", wall, [server(tracker, now, wall)], [])).decode())


def test_a_finished_session_shows_idle_with_its_outcome_and_history() -> None:
    """The seed's session: the unknown agent failed it, then a normal prompt was answered. It is
    listed although nothing is pending, with its history newest first and how long each lasted."""
    tracker, _ = run("1.18.33", "unknown-agent", TIMEOUTS, linger=60)
    [view] = tracker.sessions(tracker._now, WALL)
    now = tracker._now
    [row] = page(tracker, now).of("session")
    assert row.attrs["data-state"] == "idle"
    assert row.attrs["data-session"] == view.session_id
    assert row.cells["state"] == "idle"
    assert row.cells["pending"] == "0"
    assert row.cells["last outcome"].startswith("answered (")
    assert row.cells["last activity"].endswith(" ago")
    history = row.cells["history"]
    assert history.startswith("3 states")
    # newest first: idle (still), then working, then failed
    assert history.index("idle") < history.index("working") < history.index("failed")
    assert "so far" in history
    doc = session_doc(view, WALL)
    assert [h["state"] for h in doc["history"]] == ["failed", "working", "idle"]
    assert [h["current"] for h in doc["history"]] == [False, False, True]
    first, second, _ = doc["history"]
    # each lasted until the next began
    assert first["lasted_seconds"] == round(view.history[1].since - view.history[0].since, 3)
    assert second["lasted_seconds"] == round(view.history[2].since - view.history[1].since, 3)
    assert (doc["state"], doc["words"], doc["pending"], doc["last_outcome"]) == (
        "idle",
        "idle",
        0,
        "answered",
    )


def test_states_in_plain_words_most_recent_first() -> None:
    """Retrying with its attempt and next try, waiting for a person, working on N prompts."""
    tracker = Tracker("laptop", TIMEOUTS)
    tracker.feed(PromptAdmitted("ses_retry", "msg_1", 100.0), 100.0, WALL - 30)
    tracker.feed(
        StatusChanged("ses_retry", SessionRun.RETRY, 3, "rate limited", WALL + 12), 100.0, WALL - 30
    )
    tracker.feed(PromptAdmitted("ses_ask", "msg_2", 110.0), 110.0, WALL - 20)
    tracker.feed(StatusChanged("ses_ask", SessionRun.BUSY), 110.0, WALL - 20)
    tracker.feed(HumanAsked("ses_ask", "per_1"), 111.0, WALL - 19)
    tracker.feed(PromptAdmitted("ses_work", "msg_3", 120.0), 120.0, WALL - 10)
    tracker.feed(StatusChanged("ses_work", SessionRun.BUSY), 120.0, WALL - 10)
    rows = page(tracker, 130.0).of("session")
    assert [(r.attrs["data-session"], r.cells["state"]) for r in rows] == [
        ("ses_work", "working on 1 prompt"),
        ("ses_ask", "waiting for a person"),
        ("ses_retry", "retrying (attempt 3, next try in 12 s)"),
    ]
    assert rows[1].attrs["data-state"] == "waiting_for_a_person"
    docs = sessions_doc(tracker.sessions(130.0, WALL), WALL)
    retry = docs[2]
    assert retry["retry"] == {
        "attempt": 3,
        "next_at": "2026-11-25T08:51:52.000Z",
        "message": "rate limited",
    }
    assert [d["idle_seconds"] for d in docs] == [10.0, 19.0, 30.0]
    text = render_status(
        {
            "now": "2026-11-25T08:51:40.000Z",
            "servers": [{"server": "laptop", "stream": {"state": "up"}, "sessions": docs}],
        }
    )
    lines = text.splitlines()
    start = lines.index("SESSIONS (3, most recent first)")
    assert [line.split()[0:2] for line in lines[start + 2 : start + 5]] == [
        ["laptop", "working"],
        ["laptop", "waiting"],
        ["laptop", "retrying"],
    ]


def test_the_page_lists_a_bounded_number_of_sessions() -> None:
    tracker = Tracker("laptop", TIMEOUTS)
    for i in range(MAX_SESSIONS + 10):
        tracker.feed(PromptAdmitted(f"ses_{i:03d}", f"msg_{i}", float(i)), float(i), WALL + i)
    view = ServerView("laptop", "u", "up", None, None, None, 0, [], tracker.sessions(100.0, WALL))
    rows = PageDom(render(PageView("9", WALL, [view, view], [])).decode()).of("session")
    assert len(rows) == MAX_SESSIONS
    assert rows[0].attrs["data-session"] == f"ses_{MAX_SESSIONS + 9:03d}"
