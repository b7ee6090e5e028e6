"""The real daemon process against a fake OpenCode 2 server (tests/e2e/fake_opencode2.py): each
stream's verdict in exact counters and webhooks, every stall kind and outcome on OpenCode 2's terms.

The recordings are real opencode v2.0.16 event feeds (tests/fixtures/opencode2/amx-2.0.16), played
by the fake with its own SSE framing and heartbeats; the other fixture streams are reconstructions
after real 2.0.12/2.0.19 streams (tests/fixtures/opencode2/SOURCES); the tests marked SYNTHETIC
send events built from the upstream schema that no real stream showed us. Nothing here ran against
a real OpenCode 2 server: none can be installed on these machines.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import DaemonFactory
from .fake_opencode2 import (
    Events,
    FakeOpenCode2,
    inbox_ids,
    new_id,
    recording,
    session_of,
    timeline_reply,
)
from .harness import PATIENCE, DaemonProcess, OpenCodeServer, Pace, WebhookReceiver, wait_until

SERVER = {"server": "oc2"}
OUTCOMES = ("answered", "failed", "aborted", "dropped", "no_reply")
KINDS = ("no_response", "inactive", "dropped", "failed")
CALM = ("--first-response-timeout", "20s", "--inactivity-timeout", "20s", "--tool-timeout", "60s")
QUICK = 2.0  # the stall timeout where a stall is the point: the fake sends events in milliseconds
EAGER = ("--first-response-timeout", f"{QUICK}s", "--inactivity-timeout", f"{QUICK}s")


@pytest.fixture
def fake() -> Iterator[FakeOpenCode2]:
    with FakeOpenCode2(heartbeat=1.0) as server:
        yield server


def watch(
    daemon_factory: DaemonFactory,
    fake: FakeOpenCode2,
    webhook: WebhookReceiver,
    timeouts: tuple[str, ...],
) -> DaemonProcess:
    daemon = daemon_factory(
        [
            "--server",
            fake.server_arg(),
            "--webhook",
            webhook.url,
            "--log-format",
            "json",
            *timeouts,
        ],
        env=fake.daemon_env(),
    )
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    return daemon


def counts(daemon: DaemonProcess) -> dict[str, float]:
    result = {"accepted": daemon.sample("opencode_watchdog_prompts_accepted", SERVER) or 0}
    for outcome in OUTCOMES:
        labels = {**SERVER, "outcome": outcome}
        result[f"completed:{outcome}"] = (
            daemon.sample("opencode_watchdog_prompts_completed", labels) or 0
        )
    for kind in KINDS:
        labels = {**SERVER, "kind": kind}
        result[f"stall:{kind}"] = daemon.sample("opencode_watchdog_stalls", labels) or 0
    return result


def expect(**nonzero: float) -> dict[str, float]:
    base = {"accepted": 0.0}
    base.update({f"completed:{o}": 0.0 for o in OUTCOMES})
    base.update({f"stall:{k}": 0.0 for k in KINDS})
    for key, value in nonzero.items():
        base[key.replace("_", ":", 1) if key != "accepted" else key] = value
    return base


def settle(
    daemon: DaemonProcess, want: dict[str, float], what: str, timeout: float = PATIENCE
) -> None:
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
    return webhook.wait_for(
        lambda b: b["status"] == status and b["kind"] == kind and b["message_id"] == message_id,
        timeout=timeout,
    )


# -- the fixture streams: each one's verdict --------------------------------------------------


def test_a_reply_is_answered_and_the_server_is_shown_as_opencode_2(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, CALM)
    fake.play("answered")
    settle(daemon, expect(accepted=1, completed_answered=1), "the answered prompt")
    assert webhook.requests == []
    completed = daemon.wait_for_log(lambda r: r.get("event") == "prompt.completed")
    assert completed["message_id"] == inbox_ids("answered")[0]
    assert completed["session_id"] == session_of("answered")
    assert (completed["outcome"], completed["reason"]) == ("answered", "stop")
    assert daemon.sample("opencode_watchdog_first_response_seconds_count", SERVER) == 1
    status = daemon.status()["servers"][0]
    assert (status["api"], status["api_mode"], status["server_version"]) == ("v2", "auto", "2.0.18")
    assert status["stream"]["path"] == "/api/event"
    assert daemon.sample("opencode_watchdog_server_api", {**SERVER, "api": "v2"}) == 1
    assert fake.requests[:2] == ["/api/info", "/api/event"]
    assert b'class="api">API v2<' in daemon.get("/").content


def test_a_tool_turn_answered_after_a_permission_longer_than_the_timeouts_is_no_stall(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """The stream keeps its gaps (each cut to 6 s): the person answers after 6 s, beyond the 5 s
    timeouts, and nothing fires, because the clocks stand still while a person is asked."""
    timeouts = (
        "--first-response-timeout",
        "5s",
        "--inactivity-timeout",
        "5s",
        "--tool-timeout",
        "5s",
    )
    daemon = watch(daemon_factory, fake, webhook, timeouts)
    fake.play("tools", max_gap=6.0)
    settle(daemon, expect(accepted=1, completed_answered=1), "the tool turn", Pace.beyond(5.0))
    assert webhook.requests == []
    usage = daemon.sample("opencode_watchdog_tokens", {**SERVER, "type": "input"})
    assert usage == 3028 + 3094


def test_an_interrupted_turn_is_aborted_without_an_alert(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, CALM)
    fake.play("interrupted")
    settle(daemon, expect(accepted=1, completed_aborted=1), "the interrupted prompt")
    assert webhook.requests == []


def test_a_dismissed_question_and_a_steer_abort_the_first_and_answer_the_second(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, CALM)
    fake.play("steer-cancel")
    settle(daemon, expect(accepted=2, completed_aborted=1, completed_answered=1), "both prompts")
    first, second = inbox_ids("steer-cancel")
    done = {r["message_id"]: r["outcome"] for r in daemon.logs("prompt.completed")}
    assert done == {first: "aborted", second: "answered"}
    assert webhook.requests == []


def test_a_run_failing_before_any_step_is_failed_with_its_cause(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, CALM)
    fake.play("execution-failed")
    settle(daemon, expect(accepted=1, completed_failed=1, stall_failed=1), "the failed prompt")
    body = alert(webhook, "firing", "failed", inbox_ids("execution-failed")[0])
    assert body["error"] == {"name": "provider.no-route", "message": "Model unavailable: fake/nope"}
    assert body["reason"] == "provider.no-route"
    assert body["server"] == "oc2"


# -- the real 2.0.16 recordings: each one's verdict, end to end ---------------------------------

# Each recorded gap is cut to this (the 33 s of a `sleep 40`, a person's 31 s), so that a test
# takes seconds; the CALM timeouts stay ten times longer than any gap it leaves.
RECORDED_GAP = 0.5


@pytest.mark.parametrize(
    ("name", "outcomes", "counters"),
    [
        ("turn", ["answered"], {"accepted": 1, "completed_answered": 1}),
        ("steer", ["answered", "answered"], {"accepted": 2, "completed_answered": 2}),
        ("interrupt", ["aborted"], {"accepted": 1, "completed_aborted": 1}),
        (
            "permission",
            ["answered", "aborted"],
            {"accepted": 2, "completed_answered": 1, "completed_aborted": 1},
        ),
        (
            "question",
            ["answered", "aborted"],
            {"accepted": 2, "completed_answered": 1, "completed_aborted": 1},
        ),
    ],
)
def test_a_recorded_feed_gives_its_verdict_without_an_alert(
    fake: FakeOpenCode2,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    name: str,
    outcomes: list[str],
    counters: dict[str, float],
) -> None:
    """A real 2.0.16 feed played through the fake (its gaps kept, each cut to RECORDED_GAP): a
    shell turn answered; a steer answered with the prompt it joined, in one execution; Esc twice,
    a rejected permission and a dismissed question aborted. Nothing is a stall or a failure: no
    webhook. After the last turn the session is idle, whatever the interrupt's reason."""
    fake.version = "2.0.16"
    daemon = watch(daemon_factory, fake, webhook, CALM)
    fake.play(recording(name), max_gap=RECORDED_GAP)
    settle(daemon, expect(**counters), f"the {name} recording's verdict")
    done = {r["message_id"]: r["outcome"] for r in daemon.logs("prompt.completed")}
    assert done == dict(zip(inbox_ids(recording(name)), outcomes, strict=True))
    assert webhook.requests == []
    status = daemon.status()["servers"][0]
    assert status["server_version"] == "2.0.16"
    assert status["pending"] == []
    sessions = {s["session_id"]: s for s in status["sessions"]}
    assert sessions[session_of(recording(name))]["state"] == "idle"


def test_a_recorded_shell_turn_counts_the_usage_of_both_its_steps(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, CALM)
    fake.play(recording("turn"), max_gap=RECORDED_GAP)
    settle(daemon, expect(accepted=1, completed_answered=1), "the recorded turn")
    usage = daemon.sample("opencode_watchdog_tokens", {**SERVER, "type": "input"})
    assert usage == 3643 + 3737


def test_a_recorded_provider_400_is_one_failure_alert_with_its_cause(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """`session.step.failed` then `session.execution.failed`, both `provider.invalid-request`
    (status 400): one failed prompt, one firing webhook naming the cause, nothing else."""
    daemon = watch(daemon_factory, fake, webhook, CALM)
    fake.play(recording("failure"), max_gap=RECORDED_GAP)
    settle(daemon, expect(accepted=1, completed_failed=1, stall_failed=1), "the failed prompt")
    prompt = inbox_ids(recording("failure"))[0]
    body = alert(webhook, "firing", "failed", prompt)
    assert body["error"] == {
        "name": "provider.invalid-request",
        "message": "measurement: bad request",
    }
    assert body["reason"] == "provider.invalid-request"
    assert body["session_id"] == session_of(recording("failure"))
    assert [(b["status"], b["kind"], b["message_id"]) for b in webhook.bodies] == [
        ("firing", "failed", prompt)
    ]


# -- SYNTHETIC: built from the schema, never seen on a real server ------------------------------


def test_synthetic_hang_before_the_first_output_is_no_response(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, EAGER)
    events = Events()
    prompt, enqueued = events.prompt()
    reply = new_id("msg")
    fake.send(enqueued, *events.turn(prompt, reply))
    body = alert(webhook, "firing", "no_response", prompt, Pace.beyond(QUICK))
    assert (body["session_id"], body["provider"], body["model"]) == (
        events.session,
        "fake",
        "fake-2",
    )
    assert body["waited_seconds"] >= QUICK
    fake.send(events.text(reply), events.ended(reply), events.ev("session.execution.succeeded"))
    alert(webhook, "resolved", "no_response", prompt)
    settle(daemon, expect(accepted=1, completed_answered=1, stall_no_response=1), "the late answer")


def test_synthetic_silence_mid_reply_is_inactive(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, EAGER)
    events = Events()
    prompt, enqueued = events.prompt()
    reply = new_id("msg")
    fake.send(enqueued, *events.turn(prompt, reply), events.text(reply))
    alert(webhook, "firing", "inactive", prompt, Pace.beyond(QUICK))
    settle(daemon, expect(accepted=1, stall_inactive=1), "the inactive stall")
    assert daemon.status()["servers"][0]["pending"][0]["state"] == "stalled"


def test_synthetic_execution_ending_before_its_step_does_drops_the_prompt(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, CALM)
    events = Events()
    prompt, enqueued = events.prompt()
    reply = new_id("msg")
    fake.send(
        enqueued,
        *events.turn(prompt, reply),
        events.text(reply),
        events.ev("session.execution.succeeded"),
    )
    settle(daemon, expect(accepted=1, completed_dropped=1, stall_dropped=1), "the dropped prompt")
    body = alert(webhook, "firing", "dropped", prompt)
    assert body["reason"] == "idle_before_finish"


def test_synthetic_failed_step_is_failed_with_its_cause_once(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, CALM)
    events = Events()
    prompt, enqueued = events.prompt()
    reply = new_id("msg")
    error = {"type": "provider.rate-limit", "message": "429 Too Many Requests", "status": 429}
    fake.send(
        enqueued,
        *events.turn(prompt, reply),
        events.ev("session.step.failed", assistantMessageID=reply, error=error),
        events.ev("session.execution.failed", error=error),
    )
    settle(daemon, expect(accepted=1, completed_failed=1, stall_failed=1), "the failed prompt")
    body = alert(webhook, "firing", "failed", prompt)
    assert body["error"] == {"name": "provider.rate-limit", "message": "429 Too Many Requests"}


def test_synthetic_retry_and_a_queued_prompt_each_get_their_answer(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """A retry keeps the turn's clock (no stall within the calm timeouts), and a prompt queued
    behind it waits for its own execution: the first execution's end does not drop it."""
    daemon = watch(daemon_factory, fake, webhook, CALM)
    events = Events()
    first, enqueued = events.prompt()
    second, queued = events.prompt(delivery="queue")
    r1, r2 = new_id("msg"), new_id("msg")
    retry = events.ev(
        "session.retry.scheduled",
        assistantMessageID=r1,
        attempt=1,
        at=int(time.time() * 1000) + 1000,
        error={"type": "provider.overloaded", "message": "overloaded"},
    )
    fake.send(enqueued, *events.turn(first, r1), queued, retry, events.text(r1), events.ended(r1))
    fake.send(events.ev("session.execution.succeeded"), *events.turn(second, r2))
    fake.send(events.text(r2), events.ended(r2), events.ev("session.execution.succeeded"))
    settle(daemon, expect(accepted=2, completed_answered=2), "both prompts answered")
    assert [r["message_id"] for r in daemon.logs("prompt.completed")] == [first, second]
    assert webhook.requests == []


def test_synthetic_permission_wait_pauses_the_timers(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """Waiting for a person past the first-response timeout fires nothing; once answered, the
    silence that follows is the model's again and fires."""
    daemon = watch(daemon_factory, fake, webhook, EAGER)
    events = Events()
    prompt, enqueued = events.prompt()
    reply = new_id("msg")
    asked = events.ev("permission.asked", id="per_1", action="shell", resources=["[command]"])
    fake.send(enqueued, *events.turn(prompt, reply), asked)
    blocked = daemon.wait_for_sample(
        "opencode_watchdog_prompts_pending", {**SERVER, "state": "blocked"}, lambda v: v == 1
    )
    assert blocked == 1
    time.sleep(2 * QUICK)  # a person takes their time: twice the timeout
    assert webhook.requests == []
    fake.send(events.ev("permission.replied", requestID="per_1", reply="once"))
    alert(webhook, "firing", "no_response", prompt, Pace.beyond(QUICK))
    settle(daemon, expect(accepted=1, stall_no_response=1), "the stall after the answer")


# -- recovery after a reconnect, from OpenCode 2's REST ------------------------------------------


def test_a_prompt_answered_while_the_stream_was_down_ends_answered_after_the_reconnect(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, fake, webhook, CALM)
    events = Events()
    prompt, enqueued = events.prompt()
    reply = new_id("msg")
    fake.send(enqueued, *events.turn(prompt, reply))
    settle(daemon, expect(accepted=1), "the accepted prompt")
    # The stream breaks; meanwhile the reply ends. The REST answers say so; the stream never will.
    fake.messages[events.session] = timeline_reply(prompt, reply, int(time.time() * 1000))
    fake.active.discard(events.session)
    fake.close_stream()
    settle(daemon, expect(accepted=1, completed_answered=1), "the prompt recovered as answered")
    assert fake.streams >= 2
    assert "/api/session/active" in fake.requests
    assert f"/api/session/{events.session}/message" in fake.requests
    assert webhook.requests == []
    assert (daemon.sample("opencode_watchdog_stream_reconnects", SERVER) or 0) >= 1


@pytest.mark.parametrize(
    ("restart", "reason"), [(False, "idle_without_reply"), (True, "server_restart")]
)
def test_a_prompt_lost_while_the_stream_was_down_is_dropped_after_the_reconnect(
    fake: FakeOpenCode2,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    restart: bool,
    reason: str,
) -> None:
    """The session is idle and its timeline shows no reply: the prompt was never answered; the
    server restarted meanwhile when `/api/info` gives another pid."""
    daemon = watch(daemon_factory, fake, webhook, CALM)
    events = Events()
    prompt, enqueued = events.prompt()
    fake.send(enqueued, events.ev("session.execution.started"))
    settle(daemon, expect(accepted=1), "the accepted prompt")
    fake.messages[events.session] = [
        {"id": prompt, "type": "user", "time": {"created": int(time.time() * 1000)}}
    ]
    fake.active.discard(events.session)
    if restart:
        fake.pid += 1
    fake.close_stream()
    settle(daemon, expect(accepted=1, completed_dropped=1, stall_dropped=1), "the lost prompt")
    assert alert(webhook, "firing", "dropped", prompt)["reason"] == reason


# -- detection against the real OpenCode 1.18.33 ---------------------------------------------


def test_the_real_1_18_33_is_detected_as_1x_and_answers_api_info_with_its_web_page(
    opencode_server: OpenCodeServer, daemon_factory: DaemonFactory
) -> None:
    """What `GET /api/info` gives on a real 1.18.33 (its web app's catch-all page), and that the
    daemon in `api = "auto"` then follows `/global/event` and sees a prompt answered."""
    auth = ("opencode", opencode_server.password)
    info = httpx.get(f"{opencode_server.url}/api/info", auth=auth, timeout=10.0)
    assert info.status_code == 200
    assert info.headers["content-type"].startswith("text/html")
    daemon = daemon_factory(
        ["--server", opencode_server.server_arg(), "--log-format", "json", *CALM],
        env=opencode_server.daemon_env(),
    )
    local = {"server": "local"}
    daemon.wait_for_sample("opencode_watchdog_stream_up", local, lambda v: v == 1)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    status = daemon.status()["servers"][0]
    assert (status["api"], status["api_mode"], status["server_version"]) == ("v1", "auto", None)
    assert status["stream"]["path"] == "/global/event"
    assert daemon.sample("opencode_watchdog_server_api", {**local, "api": "v1"}) == 1
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "hello")
    opencode_server.wait_for_reply(session, message)
    daemon.wait_for_sample(
        "opencode_watchdog_prompts_completed", {**local, "outcome": "answered"}, lambda v: v == 1
    )


def test_synthetic_prompt_admitted_without_resume_is_no_reply(
    fake: FakeOpenCode2, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """`POST /api/session/{id}/prompt` with `resume: false` enqueues an input and starts no
    execution: OpenCode 2's `noReply`. No turn begins within the turn-start timeout: no_reply,
    no alert."""
    daemon = watch(daemon_factory, fake, webhook, (*CALM, "--turn-start-timeout", f"{QUICK}s"))
    events = Events()
    prompt, enqueued = events.prompt(delivery="queue")
    fake.send(enqueued)
    settle(daemon, expect(accepted=1, completed_no_reply=1), "the no_reply", Pace.beyond(QUICK))
    done = daemon.wait_for_log(lambda r: r.get("event") == "prompt.completed")
    assert (done["message_id"], done["reason"]) == (prompt, "no_turn_started")
    assert webhook.requests == []
