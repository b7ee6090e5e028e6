"""The status page's HTML: what it shows, what it escapes, and what it never shows."""

from __future__ import annotations

from tests.pagedom import PageDom
from watchdog.app.page import PageView, ServerView, render
from watchdog.core.tracker import PendingPrompt
from watchdog.core.transitions import (
    Completed,
    ErrorInfo,
    Outcome,
    PromptRef,
    PromptState,
    Resolved,
    Stalled,
    StallKind,
)
from watchdog.sinks.recent import MAX_CAUSE, RecentIncidents

NOW = 1_795_596_700.0
HOSTILE = '/home/x/<script>alert("x")</script>&co'


def ref(message: str, *, directory: str | None = "/srv/p") -> PromptRef:
    return PromptRef(
        server="laptop",
        session_id="ses_" + message,
        message_id="msg_" + message,
        accepted_at=NOW - 400,
        directory=directory,
        provider="anthropic",
        model="claude",
    )


def page(**changes: object) -> PageDom:
    recent = RecentIncidents()
    recent.emit(Stalled(ref("a"), StallKind.NO_RESPONSE, at=NOW - 100, waited=300.0))
    recent.emit(Stalled(ref("b"), StallKind.INACTIVE, at=NOW - 50, waited=310.0))
    recent.emit(Resolved(ref("b"), StallKind.INACTIVE, at=NOW - 40, waited=320.0))
    recent.emit(Completed(ref("b"), Outcome.ANSWERED, at=NOW - 40, duration=320.0))
    # What the tracker sends for a failure: the final `failed` stall, then the ending.
    failure = ErrorInfo("APIError", "the provider rejected the request")
    recent.emit(
        Stalled(
            ref("c"), StallKind.FAILED, at=NOW - 10, waited=5.0, reason="APIError", error=failure
        )
    )
    recent.emit(Completed(ref("c"), Outcome.FAILED, at=NOW - 10, duration=5.0, reason="APIError"))
    server = ServerView(
        name="laptop",
        url="http://127.0.0.1:4096",
        state="up",
        since=NOW - 3600,
        last_event_at=NOW - 2,
        last_error=None,
        reconnects=1,
        pending=[
            PendingPrompt(ref("a"), PromptState.STALLED, 400.0),
            PendingPrompt(ref("d", directory=HOSTILE), PromptState.WAITING, 12.5),
        ],
    )
    view = PageView("9.9.9", NOW, [server], recent.latest())
    for key, value in changes.items():
        object.__setattr__(view, key, value)
    text = render(view).decode()
    assert "<script>" not in text
    return PageDom(text)


def test_page_lists_pending_prompts_with_state_age_session_directory_and_model() -> None:
    """Each pending prompt is a row, oldest first, with its state, age, ids, directory, model."""
    dom = page()
    rows = dom.of("prompt")
    assert [r.attrs["data-state"] for r in rows] == ["stalled", "waiting"]
    assert rows[0].cells == {
        "state": "stalled",
        "age": "6 min 40 s",
        "server": "laptop",
        "session": "ses_a",
        "message": "msg_a",
        "directory": "/srv/p",
        "model": "anthropic/claude",
    }
    assert rows[1].cells["age"] == "12.5 s"


def test_page_escapes_every_value() -> None:
    """A directory holding markup is shown as text, not run."""
    dom = page()
    assert dom.of("prompt")[1].cells["directory"] == HOSTILE


def test_page_lists_latest_stalls_and_failures_newest_first() -> None:
    """Stalls and failed prompts, newest first, with kind, when, waited, cause (the server's
    error for a failure, the kind in words for a stall) and what became of them."""
    rows = page().of("incident")
    assert [r.attrs["data-kind"] for r in rows] == ["failed", "inactive", "no_response"]
    failed, inactive, no_response = (r.cells for r in rows)
    assert failed["cause"] == "APIError: the provider rejected the request"
    assert failed["model"] == "anthropic/claude"
    assert failed["now"] == "ended failed"
    assert no_response["cause"] == "no model output within the first-response timeout"
    assert inactive["now"] == "ended answered"
    assert inactive["waited"] == "5 min 10 s"
    assert no_response["now"] == "firing"
    assert no_response["when"] == "2026-11-25 08:50:00Z (1 min 40 s ago)"


def test_page_has_links_refresh_viewport_and_server_state() -> None:
    """Links to the machine endpoints, a refresh, a phone viewport, and each stream's state."""
    dom = page()
    assert dom.links == ["/metrics", "/status", "/healthz"]
    metas = {m.get("name") or m.get("http-equiv"): m.get("content") for m in dom.metas}
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    assert metas["refresh"] == "10"
    assert dom.servers == [{"class": "server", "data-server": "laptop", "data-state": "up"}]
    assert dom.title == "opencode-watchdog: 1/1 up, 2 pending"


def test_probe_section_appears_only_with_probe_results() -> None:
    """No probes, no section; probe results are a table with one column per key."""
    assert page().of("probe") == []
    dom = page(probes=[{"server": "laptop", "result": "ok", "seconds": 1.5}])
    assert [r.cells for r in dom.of("probe")] == [
        {"server": "laptop", "result": "ok", "seconds": "1.5"}
    ]


def test_a_failure_before_the_prompt_was_stored_shows_the_servers_message() -> None:
    """The seed's failure (an unknown agent: nothing stored, only `session.error`): the row says
    the server's message, that no message was stored, and which model, when none was named."""
    recent = RecentIncidents()
    unstored = PromptRef(server="laptop", session_id="ses_x", message_id=None, accepted_at=NOW)
    message = 'Agent not found: "no-such-agent". Available agents: build, explore, general, plan'
    error = ErrorInfo("UnknownError", message)
    recent.emit(Stalled(unstored, StallKind.FAILED, NOW, 0.0, reason="UnknownError", error=error))
    recent.emit(Completed(unstored, Outcome.FAILED, NOW, duration=0.0, reason="UnknownError"))
    known = PromptRef("laptop", "ses_y", None, NOW, provider="fake", model="fake-1")
    recent.emit(Stalled(known, StallKind.FAILED, NOW, 0.0, reason="UnknownError", error=error))
    view = PageView("9.9.9", NOW, [], recent.latest())
    second, first = (r.cells for r in PageDom(render(view).decode()).of("incident"))
    assert first["cause"] == f"UnknownError: {message}"
    assert first["message"] == "not stored"
    assert first["model"] == "unknown: nothing was stored"
    assert second["model"] == "fake/fake-1"


def test_a_long_server_message_is_cut() -> None:
    recent = RecentIncidents()
    error = ErrorInfo("APIError", "x" * 1000)
    recent.emit(Stalled(ref("c"), StallKind.FAILED, NOW, 0.0, error=error))
    [row] = PageDom(render(PageView("9.9.9", NOW, [], recent.latest())).decode()).of("incident")
    assert row.cells["cause"] == "APIError: " + "x" * (MAX_CAUSE - len("APIError: ") - 1) + "…"
