"""The daemon's own trouble never becomes an alert, nor silences one (issue 16), against a real
OpenCode 1.18.33 behind a fault-injecting proxy (tests/e2e/proxy.py FaultProxy), and for the
reload a real Alertmanager."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_alertmanager_real import (  # noqa: F401 - fixtures, used by name
    WAIT,
    Alertmanager,
    Receiver,
    alertmanager,
    receiver,
)

from .conftest import DaemonFactory, Measure
from .harness import DaemonProcess, OpenCodeServer, Pace, WebhookReceiver, wait_until
from .proxy import FaultProxy
from .test_scenarios import SERVER, counts, expect, pending, settle, timeouts


@pytest.fixture
def proxy(opencode_server: OpenCodeServer) -> Iterator[FaultProxy]:
    faults = FaultProxy(opencode_server.url)
    try:
        yield faults
    finally:
        faults.close()


def watch_through(
    daemon_factory: DaemonFactory,
    server: OpenCodeServer,
    proxy: FaultProxy,
    webhook: WebhookReceiver,
    flags: tuple[str, ...],
) -> DaemonProcess:
    daemon = daemon_factory(
        [
            "--server",
            f"local={proxy.url}",
            "--webhook",
            webhook.url,
            "--log-format",
            "json",
            *flags,
        ],
        env=server.daemon_env(),
    )
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    return daemon


def reconnected_with_unknowns(daemon: DaemonProcess, what: str) -> dict[str, Any]:
    """Wait for the reconnect's read that could not read ``what`` to be fed to the tracker."""
    failed = daemon.wait_for_log(
        lambda r: r.get("event") == "reconcile.read_failed" and r.get("what") == what
    )
    done = daemon.wait_for_log(
        lambda r: r.get("event") == "reconcile.done" and r.get("unknown", 0) >= 1
    )
    assert "answered HTTP 5" in failed["error"]
    return done


def daemon_time(daemon: DaemonProcess) -> float:
    return datetime.fromisoformat(daemon.status()["now"]).timestamp()


def test_a_status_read_failing_during_a_reconnect_drops_nothing(
    opencode_server: OpenCodeServer,
    proxy: FaultProxy,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    measure: Measure,
) -> None:
    """Item 1: a prompt pending in a busy session, the stream cut, `GET /session/status` 503
    during the reconnect's read. It used to end `dropped` (server_restart) 0.2 s later, a final
    false page. Now: nothing changes, the read is logged, counted, retried; once it reads, the
    prompt is still pending, and its abort ends it `aborted`."""
    daemon = watch_through(
        daemon_factory, opencode_server, proxy, webhook, timeouts("600s", "600s")
    )
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    opencode_server.wait_for_status(session, "busy")
    daemon.wait_for_log(lambda r: r.get("event") == "prompt.accepted")
    proxy.fail("/session/status", 503)
    cut_at = time.monotonic()
    assert proxy.cut_streams() >= 1
    reconnected_with_unknowns(daemon, "status")
    assert counts(daemon) == expect(accepted=1)
    failures = {**SERVER, "what": "status"}
    assert (daemon.sample("opencode_watchdog_reconcile_failures", failures) or 0) >= 1
    proxy.heal()
    # read_recovered is logged in the step that feeds the read to the tracker (nothing awaited
    # between), so whatever the daemon answers next reflects it. Not reconcile.done: that line is
    # rate-limited like any repeated one, and under load the recovering read was the sixth
    # reconcile of its minute, held back (a flaky wait once).
    daemon.wait_for_log(
        lambda r: r.get("event") == "reconcile.read_recovered" and r.get("what") == "status"
    )
    measure("status read failing -> read again after healing (s)", time.monotonic() - cut_at)
    assert counts(daemon) == expect(accepted=1)
    assert pending(daemon, "waiting") == 1
    assert not [b for b in webhook.bodies if b["message_id"] == message]
    assert opencode_server.abort(session)
    settle(daemon, expect(accepted=1, completed_aborted=1), "the abort")
    assert webhook.bodies == []
    # Logged once per read (the default directory, the project's), however often it failed.
    logged = [(r["what"], r["where"]) for r in daemon.logs("reconcile.read_failed")]
    assert sorted(logged, key=str) == sorted(set(logged), key=str)
    assert {what for what, _ in logged} == {"status"}


def test_a_permission_read_failing_during_a_reconnect_keeps_the_wait(
    opencode_server: OpenCodeServer,
    proxy: FaultProxy,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
) -> None:
    """Item 2: a prompt blocked on a permission still pending, the stream cut, `GET /permission`
    and `/question` 500 on the reconnect. The empty list used to clear the wait: `inactive`
    fired 2.7 s later. Now the wait is kept past three timeouts, and the answer to the
    permission ends the prompt answered."""
    quick = opencode_server.quick_timeout(floor=2.0)
    daemon = watch_through(
        daemon_factory, opencode_server, proxy, webhook, timeouts(*[f"{quick}s"] * 3)
    )
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "run a TOOL please")
    request = opencode_server.wait_for_permission(session)
    daemon.wait_for_sample("opencode_watchdog_prompts_pending", {**SERVER, "state": "blocked"})
    proxy.fail("/permission", 500)
    proxy.fail("/question", 500)
    assert proxy.cut_streams() >= 1
    reconnected_with_unknowns(daemon, "permission")
    since = daemon_time(daemon)
    wait_until(
        lambda: daemon_time(daemon) - since > 3 * quick or None,
        Pace.beyond(3 * quick),
        "three timeouts",
    )
    assert counts(daemon) == expect(accepted=1)
    assert pending(daemon, "blocked") == 1
    proxy.heal()
    # read_recovered, not reconcile.done: see the test above.
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.read_recovered")
    assert pending(daemon, "blocked") == 1  # read whole again: the permission still pending
    assert {r["what"] for r in daemon.logs("reconcile.read_failed")} == {"permission", "question"}
    assert opencode_server.reply_permission(request["id"])
    opencode_server.wait_for_reply(session, message)
    settle(daemon, expect(accepted=1, completed_answered=1), "the answer after the permission")
    assert webhook.requests == []


def am_alert(am: Alertmanager, message: str) -> dict[str, Any] | None:
    """The alert Alertmanager holds for this message, or None."""
    found = httpx.get(
        f"{am.url}/api/v2/alerts", params={"filter": f'message_id="{message}"'}, timeout=5.0
    ).json()
    return found[0] if found else None


def test_a_reload_keeps_alertmanager_informed_and_the_abort_resolves(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    alertmanager: Alertmanager,  # noqa: F811 - the fixture
    receiver: Receiver,  # noqa: F811 - the fixture
    tmp_path: Path,
    measure: Measure,
) -> None:
    """Item 3, against a real Alertmanager: adding a webhook and sending SIGHUP rebuilt the
    Alertmanager sink with nothing active, so a stalled prompt's alert was never re-sent
    (Alertmanager let it expire at its endsAt, the prompt still stalled) and an abort afterwards
    resolved nothing. Now the rebuilt sink sends it at once (its endsAt moves on), the new
    webhook learns it, and the abort resolves it in Alertmanager and on the webhook."""
    config = tmp_path / "watchdog.toml"
    config.write_text(f'alertmanager = ["{alertmanager.url}"]\n')
    quick = opencode_server.quick_timeout()
    daemon = daemon_factory(
        [
            "--server",
            opencode_server.server_arg(),
            "--config",
            str(config),
            "--log-format",
            "json",
            *timeouts(f"{quick}s", f"{quick}s"),
        ],
        env=opencode_server.daemon_env(),
    )
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    fired = wait_until(lambda: am_alert(alertmanager, message), Pace.beyond(quick), "the alert")
    assert fired["status"]["state"] == "active"
    wait_until(lambda: receiver.find("firing"), WAIT, "Alertmanager's firing notification")
    config.write_text(f'alertmanager = ["{alertmanager.url}"]\nwebhook = ["{webhook.url}"]\n')
    reloaded_at = time.monotonic()
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for_log(lambda r: r.get("event") == "config.reloaded")
    told = webhook.wait_for(
        lambda b: b["status"] == "firing" and b["message_id"] == message, timeout=WAIT
    )
    assert told["kind"] == "no_response"

    def moved_on() -> dict[str, Any] | None:
        alert = am_alert(alertmanager, message)
        return alert if alert is not None and alert["endsAt"] > fired["endsAt"] else None

    resent = wait_until(moved_on, WAIT, "the rebuilt sink's send")
    measure("reload -> firing alert sent again (s)", time.monotonic() - reloaded_at)
    assert resent["startsAt"] == fired["startsAt"]
    assert opencode_server.abort(session)
    wait_until(lambda: receiver.find("resolved"), WAIT, "Alertmanager's resolved notification")
    resolved = webhook.wait_for(
        lambda b: b["status"] == "resolved" and b["message_id"] == message, timeout=WAIT
    )
    assert resolved["outcome"] == "aborted"
    assert not daemon.logs("config.reload_failed")
