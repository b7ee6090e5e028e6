"""The real daemon against a real `opencode serve` 1.18.33: each outcome ends in exact metrics and alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .conftest import DaemonFactory, Measure
from .harness import PATIENCE, DaemonProcess, OpenCodeServer, Pace, WebhookReceiver, wait_until


# Generous where nothing may fire, short where a stall is the point, and never shorter than this
# server's measured warm reply allows (see eager()). The tests assert behaviour and order, never
# how fast it happened.
def timeouts(first: str, inactivity: str, tool: str = "30s") -> tuple[str, ...]:
    """The daemon's three timeout flags."""
    return (
        "--first-response-timeout", first, "--inactivity-timeout", inactivity, "--tool-timeout", tool
    )  # fmt: skip


CALM = timeouts("20s", "20s", "60s")
SERVER = {"server": "local"}
OUTCOMES = ("answered", "failed", "aborted", "dropped", "no_reply")
KINDS = ("no_response", "inactive", "dropped", "failed")


def eager(server: OpenCodeServer) -> tuple[str, ...]:
    """Short first-response and inactivity timeouts, derived from the server's warm reply time."""
    quick = f"{server.quick_timeout()}s"
    return timeouts(quick, quick)


def watch(
    daemon_factory: DaemonFactory,
    server: OpenCodeServer,
    webhook: WebhookReceiver,
    timeouts: tuple[str, ...],
) -> DaemonProcess:
    daemon = daemon_factory(
        [
            "--server",
            server.server_arg(),
            "--webhook",
            webhook.url,
            "--log-format",
            "json",
            *timeouts,
        ],
        env=server.daemon_env(),
    )
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
    # The stream is up; the first reconcile (REST) must be done too, or it could race the prompt.
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    return daemon


def counts(daemon: DaemonProcess) -> dict[str, float]:
    """Every prompt counter of server `local`, keyed like 'completed:answered'."""
    result: dict[str, float] = {
        "accepted": daemon.sample("opencode_watchdog_prompts_accepted", SERVER) or 0
    }
    for outcome in OUTCOMES:
        labels = {**SERVER, "outcome": outcome}
        result[f"completed:{outcome}"] = (
            daemon.sample("opencode_watchdog_prompts_completed", labels) or 0
        )
    for kind in KINDS:
        result[f"stall:{kind}"] = (
            daemon.sample("opencode_watchdog_stalls", {**SERVER, "kind": kind}) or 0
        )
    return result


def expect(**nonzero: float) -> dict[str, float]:
    """The counts dict with every counter zero except those given (``completed_answered=1``)."""
    base = {"accepted": 0.0}
    base.update({f"completed:{o}": 0.0 for o in OUTCOMES})
    base.update({f"stall:{k}": 0.0 for k in KINDS})
    for key, value in nonzero.items():
        base[key.replace("_", ":", 1) if key != "accepted" else key] = value
    return base


def pending(daemon: DaemonProcess, state: str) -> float:
    return daemon.sample("opencode_watchdog_prompts_pending", {**SERVER, "state": state}) or 0


def settle(
    daemon: DaemonProcess, want: dict[str, float], what: str, timeout: float = PATIENCE
) -> None:
    """Wait until every prompt counter is as wanted (counters keep history: no passing moment).

    The default bound suits counts that follow what the test already saw; a wait for a daemon
    timeout to pass gives its own, Pace.beyond(that timeout).
    """
    wait_until(
        lambda: counts(daemon) == want or None,
        timeout,
        what,
        0.2,
        lambda: f"counts: {counts(daemon)}\n{daemon.output_tail()}",
    )


def alert(
    webhook: WebhookReceiver, status: str, kind: str, message_id: str, timeout: float = PATIENCE
) -> Any:
    """The first accepted webhook POST with this status, kind and message id (bounded wait).

    A stall alert is due after its timeout: pass Pace.beyond(that timeout) as the bound.
    """
    return webhook.wait_for(
        lambda b: b["status"] == status and b["kind"] == kind and b["message_id"] == message_id,
        timeout=timeout,
    )


def test_normal_reply_is_answered_without_a_stall(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """A prompt the model answers: accepted 1, answered 1, no stall, no alert, nothing pending."""
    daemon = watch(daemon_factory, opencode_server, webhook, CALM)
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "hello")
    opencode_server.wait_for_reply(session, message)
    settle(daemon, expect(accepted=1, completed_answered=1), "the answered prompt")
    assert daemon.sample("opencode_watchdog_first_response_seconds_count", SERVER) == 1
    assert daemon.sample("opencode_watchdog_prompts_pending", SERVER) == 0
    assert webhook.requests == []
    completed = daemon.wait_for_log(lambda r: r.get("event") == "prompt.completed")
    assert completed["message_id"] == message
    assert completed["outcome"] == "answered"


def test_hang_before_output_is_no_response(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    measure: Measure,
) -> None:
    """The LLM never answers: one no_response stall, alerted by webhook with ids and waited time."""
    limit = opencode_server.quick_timeout()
    daemon = watch(daemon_factory, opencode_server, webhook, eager(opencode_server))
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "please HANG")
    body = alert(webhook, "firing", "no_response", message, Pace.beyond(limit))
    assert body["server"] == "local"
    assert body["session_id"] == session
    assert body["provider"] == "fake"
    assert body["model"] == "fake-1"
    assert body["directory"] == str(opencode_server.project_dir)
    assert body["retry"] is None
    assert body["waited_seconds"] >= limit
    measure("no_response reported after its deadline (s)", body["waited_seconds"] - limit)
    settle(daemon, expect(accepted=1, stall_no_response=1), "the no_response stall")
    assert pending(daemon, "stalled") == 1
    status = daemon.status()["servers"][0]["pending"]
    assert [(p["session_id"], p["message_id"], p["state"]) for p in status] == [
        (session, message, "stalled")
    ]


def test_hang_mid_reply_is_inactive(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    measure: Measure,
) -> None:
    """Three tokens, then silence: the reply started, then one inactive stall."""
    daemon = watch(daemon_factory, opencode_server, webhook, eager(opencode_server))
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANGMID please")
    quick = opencode_server.quick_timeout()
    body = alert(webhook, "firing", "inactive", message, Pace.beyond(quick, quick))
    first = daemon.wait_for_log(lambda r: r.get("event") == "prompt.stalled")
    assert first["kind"] == "inactive"
    settle(daemon, expect(accepted=1, stall_inactive=1), "the inactive stall")
    assert daemon.sample("opencode_watchdog_first_response_seconds_count", SERVER) == 1
    measure("inactive: waited since acceptance when reported (s)", body["waited_seconds"])


def test_slow_steady_reply_does_not_stall(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """Twelve tokens, one a second, with an inactivity timeout shorter than the reply (at least
    3 s, longer on a slow machine: this server's quick timeout): answered, never stalled."""
    quiet = max(3.0, opencode_server.quick_timeout())
    daemon = watch(
        daemon_factory,
        opencode_server,
        webhook,
        timeouts(f"{max(20.0, quiet)}s", f"{quiet}s"),
    )
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "SLOW12 please")
    opencode_server.wait_for_reply(session, message, timeout=PATIENCE + 12)
    settle(daemon, expect(accepted=1, completed_answered=1), "the slow reply")
    assert webhook.requests == []
    duration = daemon.sample(
        "opencode_watchdog_reply_duration_seconds_sum", {**SERVER, "outcome": "answered"}
    )
    assert duration is not None
    assert duration > 3.0  # longer than the inactivity timeout, yet no stall


def test_provider_500_is_retrying_then_no_response(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """HTTP 500 from the provider: the prompt is `retrying`, then no_response with the retry info."""
    daemon = watch(
        daemon_factory,
        opencode_server,
        webhook,
        timeouts("8s", "8s"),
    )
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "FAIL please")
    daemon.wait_for_sample("opencode_watchdog_prompts_pending", {**SERVER, "state": "retrying"})
    body = alert(webhook, "firing", "no_response", message, Pace.beyond(8))
    assert body["retry"]["attempt"] >= 1
    assert body["retry"]["message"] == "upstream exploded"
    settle(daemon, expect(accepted=1, stall_no_response=1), "the retrying stall")
    opencode_server.abort(session)
    resolved = alert(webhook, "resolved", "no_response", message)
    assert resolved["outcome"] == "aborted"
    settle(
        daemon,
        expect(accepted=1, stall_no_response=1, completed_aborted=1),
        "the aborted retrying prompt",
    )


def test_same_message_id_twice_is_dropped(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    fake_llm: Any,
) -> None:
    """Re-posting an answered messageID re-admits it; no reply follows: dropped, reported at once."""
    daemon = watch(daemon_factory, opencode_server, webhook, CALM)
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "hello")
    opencode_server.wait_for_reply(session, message)
    settle(daemon, expect(accepted=1, completed_answered=1), "the first answer")
    asked = fake_llm.request_count()
    assert opencode_server.prompt_async(session, "hello again", message_id=message) == 204
    body = alert(webhook, "firing", "dropped", message)
    assert body["reason"] == "idle_without_reply"
    settle(
        daemon,
        expect(accepted=2, completed_answered=1, completed_dropped=1, stall_dropped=1),
        "the dropped re-admission",
    )
    assert fake_llm.request_count() == asked  # OpenCode really did not ask the model


def test_abort_is_aborted_and_resolves_the_stall(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """A hung prompt stalls, then the user aborts it: the stall resolves, the prompt is aborted."""
    daemon = watch(daemon_factory, opencode_server, webhook, eager(opencode_server))
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    alert(webhook, "firing", "no_response", message, Pace.beyond(opencode_server.quick_timeout()))
    assert opencode_server.abort(session)
    resolved = alert(webhook, "resolved", "no_response", message)
    assert resolved["outcome"] == "aborted"
    settle(daemon, expect(accepted=1, stall_no_response=1, completed_aborted=1), "the abort")
    assert [b["status"] for b in webhook.bodies] == ["firing", "resolved"]


def test_permission_wait_longer_than_the_timeouts_is_no_stall(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """A tool waits for a person three times longer than every timeout: blocked, no stall."""
    quick = opencode_server.quick_timeout(floor=3.0)
    daemon = watch(daemon_factory, opencode_server, webhook, timeouts(*[f"{quick}s"] * 3))
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "run a TOOL please")
    request = opencode_server.wait_for_permission(session)
    daemon.wait_for_sample("opencode_watchdog_prompts_pending", {**SERVER, "state": "blocked"})
    # Stay blocked well past every timeout, checking that nothing fires meanwhile.
    blocked_since = _seconds(daemon.status()["now"])
    wait_until(
        lambda: _seconds(daemon.status()["now"]) - blocked_since > 3 * quick or None,
        Pace.beyond(3 * quick),
        "three timeouts",
    )
    assert counts(daemon) == expect(accepted=1)
    assert pending(daemon, "blocked") == 1
    assert opencode_server.reply_permission(request["id"])
    opencode_server.wait_for_reply(session, message)
    settle(daemon, expect(accepted=1, completed_answered=1), "the answer after the permission")
    assert webhook.requests == []


def test_twenty_concurrent_sessions_with_mixed_outcomes(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """20 sessions at once — 8 answered, 4 hung, 4 hung mid-reply, 4 re-sent ids — exact counts."""
    # 20 replies at once come slower than one: never shorter than the single-reply figure.
    first = max(10.0, opencode_server.quick_timeout())
    quiet = max(6.0, opencode_server.quick_timeout())
    daemon = watch(daemon_factory, opencode_server, webhook, timeouts(f"{first}s", f"{quiet}s"))
    plan = ["hello"] * 8 + ["HANG"] * 4 + ["HANGMID"] * 4 + ["hello"] * 4
    sessions = [opencode_server.create_session() for _ in plan]
    messages = [
        opencode_server.send_prompt(s, text) for s, text in zip(sessions, plan, strict=True)
    ]
    for session, message in list(zip(sessions, messages, strict=True))[16:]:
        opencode_server.wait_for_reply(session, message)
        assert opencode_server.prompt_async(session, "again", message_id=message) == 204
    settle(
        daemon,
        expect(
            accepted=24,
            completed_answered=12,
            completed_dropped=4,
            stall_dropped=4,
            stall_no_response=4,
            stall_inactive=4,
        ),
        "twenty sessions to settle",
        Pace.beyond(first, quiet),
    )
    assert pending(daemon, "stalled") == 8
    firing = {(b["kind"], b["session_id"]) for b in webhook.bodies if b["status"] == "firing"}
    assert firing == (
        {("no_response", s) for s in sessions[8:12]}
        | {("inactive", s) for s in sessions[12:16]}
        | {("dropped", s) for s in sessions[16:]}
    )


def _seconds(iso_time: str) -> float:
    """Seconds since the epoch of a /status time (ISO 8601, UTC)."""
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
