"""Prompts that will never be answered, and API features that only look like it, on the real server.

Each case of the reference rules 9-13 against `opencode serve` 1.18.33 and the real daemon: what
is alerted (failures, with the server's cause) and what is not (noReply, /shell, deletes, rejects).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import DaemonFactory
from .harness import PATIENCE, OpenCodeServer, Pace, WebhookReceiver, opencode_id, wait_until
from .test_scenarios import CALM, SERVER, _seconds, alert, eager, expect, settle, timeouts, watch


def post_prompt(server: OpenCodeServer, session: str, **body: Any) -> int:
    """prompt_async with a hand-made body (agent, model, noReply...); returns the status code."""
    body.setdefault("parts", [{"type": "text", "text": "hi", "id": opencode_id("prt")}])
    response = server.client.post(f"/session/{session}/prompt_async", json=body)
    return response.status_code


def failed_alert(webhook: WebhookReceiver, session: str) -> Any:
    return webhook.wait_for(
        lambda b: b["status"] == "firing" and b["kind"] == "failed" and b["session_id"] == session
    )


def test_prompt_that_fails_before_it_is_stored_is_one_failed_alert(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """The seed's failure path: 204, then only session.error (twice). One failed prompt, one alert
    with a null message id and the server's error; the next prompt there is not blamed."""
    daemon = watch(daemon_factory, opencode_server, webhook, CALM)
    session = opencode_server.create_session()
    assert post_prompt(opencode_server, session, agent="no-such-agent") == 204
    body = failed_alert(webhook, session)
    assert body["message_id"] is None
    assert body["error"]["name"] == "UnknownError"
    assert body["error"]["message"].startswith("Agent not found")
    assert body["reason"] == "UnknownError"
    settle(daemon, expect(accepted=1, completed_failed=1, stall_failed=1), "the failure")
    later = opencode_server.send_prompt(session, "hello")
    opencode_server.wait_for_reply(session, later)
    settle(
        daemon,
        expect(accepted=2, completed_failed=1, stall_failed=1, completed_answered=1),
        "the next prompt",
    )
    assert [b["kind"] for b in webhook.bodies] == ["failed"]
    logged = daemon.wait_for_log(lambda r: r.get("event") == "prompt.stalled")
    assert logged["kind"] == "failed"
    assert logged["error_name"] == "UnknownError"


def test_provider_error_without_retry_is_failed_with_its_cause(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """The provider answers 400 (no retry): failed at once, with its message, provider and model."""
    daemon = watch(daemon_factory, opencode_server, webhook, CALM)
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "BADREQUEST please")
    body = failed_alert(webhook, session)
    assert body["message_id"] == message
    assert body["error"] == {"name": "APIError", "message": "the fake rejects this request"}
    assert (body["provider"], body["model"]) == ("fake", "fake-1")
    settle(daemon, expect(accepted=1, completed_failed=1, stall_failed=1), "the failed prompt")
    assert [b["status"] for b in webhook.bodies] == ["firing"]  # final: nothing to resolve


def test_no_reply_message_is_not_a_prompt(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """A noReply message, and nothing after it: no stall even past every timeout; it ends no_reply.

    No reply is wanted here, so the timeouts need not leave room for one: a first-response
    timeout of 2 s would fire long before the 6 s turn-start timeout if the message were taken
    for a prompt. The wait for the ending is derived from the turn-start timeout it waits for
    (it once was a fixed 120 s, shorter than a turn-start derived from a slow warm reply).
    """
    first, turn_start = 2.0, 6.0
    daemon = watch(
        daemon_factory,
        opencode_server,
        webhook,
        (*timeouts(f"{first}s", f"{first}s"), "--turn-start-timeout", f"{turn_start}s"),
    )
    session = opencode_server.create_session()
    assert post_prompt(opencode_server, session, messageID=opencode_id("msg"), noReply=True) == 204
    settle(
        daemon,
        expect(accepted=1, completed_no_reply=1),
        "the noReply message to end",
        Pace.beyond(turn_start),
    )
    ended = daemon.wait_for_log(lambda r: r.get("event") == "prompt.completed")
    assert ended["reason"] == "no_turn_started"
    assert daemon.sample("opencode_watchdog_prompts_pending", {**SERVER, "state": "stalled"}) == 0
    assert webhook.requests == []


def test_no_reply_then_a_prompt_each_keep_their_own_clock(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """Context, then a real prompt after the first-response timeout: the context ends no_reply,
    the prompt is answered on its own clock, and nothing stalls."""
    quick = opencode_server.quick_timeout()
    daemon = watch(daemon_factory, opencode_server, webhook, eager(opencode_server))
    session = opencode_server.create_session()
    assert post_prompt(opencode_server, session, messageID=opencode_id("msg"), noReply=True) == 204
    daemon.wait_for_log(lambda r: r.get("event") == "prompt.accepted")
    started = time.monotonic()
    wait_until(
        lambda: time.monotonic() - started > quick + 1 or None, Pace.beyond(quick + 1), "a timeout"
    )
    message = opencode_server.send_prompt(session, "hello")
    opencode_server.wait_for_reply(session, message)
    settle(
        daemon,
        expect(accepted=2, completed_no_reply=1, completed_answered=1),
        "the context and the prompt",
    )
    assert webhook.requests == []


def test_shell_command_is_answered(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """POST /session/{id}/shell: the reply ends without finish after its bash tool: answered."""
    daemon = watch(daemon_factory, opencode_server, webhook, CALM)
    session = opencode_server.create_session()
    response = opencode_server.client.post(
        f"/session/{session}/shell", json={"agent": "build", "command": "echo hi"}, timeout=30.0
    )
    assert response.status_code == 200
    settle(daemon, expect(accepted=1, completed_answered=1), "the shell reply")
    assert webhook.requests == []


def test_deleting_a_session_ends_its_stalled_prompt(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """DELETE a session whose prompt stalled: the stall resolves (aborted), nothing stays pending."""
    daemon = watch(daemon_factory, opencode_server, webhook, eager(opencode_server))
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    alert(webhook, "firing", "no_response", message, Pace.beyond(opencode_server.quick_timeout()))
    assert opencode_server.client.delete(f"/session/{session}").status_code == 200
    resolved = alert(webhook, "resolved", "no_response", message)
    assert resolved["outcome"] == "aborted"
    settle(daemon, expect(accepted=1, stall_no_response=1, completed_aborted=1), "the delete")
    assert daemon.sample("opencode_watchdog_oldest_pending_prompt_seconds", SERVER) == 0
    ended = daemon.wait_for_log(lambda r: r.get("event") == "prompt.completed")
    assert ended["reason"] == "session_deleted"


@pytest.mark.parametrize("answer", ["reject"])
def test_rejected_permission_ends_without_an_alert(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    answer: str,
) -> None:
    """A person rejects the tool: the turn ends, the prompt is aborted (rejected), no alert."""
    daemon = watch(daemon_factory, opencode_server, webhook, timeouts("20s", "20s", "20s"))
    session = opencode_server.create_session()
    opencode_server.send_prompt(session, "run a TOOL please")
    request = opencode_server.wait_for_permission(session)
    assert opencode_server.reply_permission(request["id"], answer)
    settle(daemon, expect(accepted=1, completed_aborted=1), "the rejected turn")
    ended = daemon.wait_for_log(lambda r: r.get("event") == "prompt.completed")
    assert ended["reason"] == "rejected"
    assert webhook.requests == []


def test_live_and_recovered_prompts_agree_on_their_acceptance_time(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """One daemon sees a prompt arrive, another finds it over REST: the same acceptance time."""
    live = watch(daemon_factory, opencode_server, webhook, CALM)
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    live.wait_for_log(lambda r: r.get("event") == "prompt.accepted")
    recovered = watch(daemon_factory, opencode_server, webhook, CALM)

    def accepted_at(daemon: Any) -> float | None:
        for p in daemon.status()["servers"][0]["pending"]:
            if p["message_id"] == message:
                return _seconds(p["accepted_at"])
        return None

    seen = wait_until(lambda: accepted_at(live), PATIENCE, "the live prompt in /status")
    found = wait_until(lambda: accepted_at(recovered), PATIENCE, "the recovered prompt in /status")
    created = opencode_server.messages(session)[0]["info"]["time"]["created"] / 1000
    # Same host, one clock: both are time.created plus the few milliseconds of the offset estimate.
    assert abs(seen - found) < 0.5
    assert abs(seen - created) < 0.5
