"""Faults on purpose: restarts of either side, silent and refused streams, bad credentials, signals."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from watchdog.app.config import DEFAULT_SHUTDOWN_GRACE
from watchdog.app.watch import RETRY_CAP

from .conftest import DaemonFactory, Measure
from .harness import PATIENCE, OpenCodeServer, WebhookReceiver, free_port, wait_until
from .proxy import FreezingProxy
from .test_scenarios import SERVER, alert, counts, expect, settle, watch


def test_stall_survives_a_watchdog_restart_with_its_real_age(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    measure: Measure,
) -> None:
    """Kill the watchdog while a prompt hangs, start it again: the stall is reported, aged from
    the prompt's own time.created (REST), not from the restart."""
    timeouts = ("--first-response-timeout", "8s", "--inactivity-timeout", "8s")
    first = watch(daemon_factory, opencode_server, webhook, timeouts)
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    first.wait_for_log(lambda r: r.get("event") == "prompt.accepted")
    first.send_signal(signal.SIGKILL)
    first.stop()
    killed_at = time.time()
    created = opencode_server.messages(session)[0]["info"]["time"]["created"] / 1000
    second = watch(daemon_factory, opencode_server, webhook, timeouts)
    body = alert(webhook, "firing", "no_response", message)
    reported_at = time.time()
    assert body["session_id"] == session
    assert abs(body["waited_seconds"] - (reported_at - created)) < 2.0
    assert body["waited_seconds"] >= 8.0
    assert counts(second)["stall:no_response"] == 1
    measure("watchdog restart -> stall reported (s)", reported_at - killed_at)
    measure("stall lateness after a watchdog restart (s)", reported_at - (created + 8.0))


@pytest.mark.own_server
def test_server_restart_drops_the_lost_prompt_and_the_stream_comes_back(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    measure: Measure,
) -> None:
    """Stop OpenCode: stream_up 0 and /healthz 503. Start it again on the same port: the stream
    returns, reconnects are counted, the hung prompt it lost is dropped (server_restart), and a
    new prompt is tracked normally."""
    daemon = watch(
        daemon_factory,
        opencode_server,
        webhook,
        ("--first-response-timeout", "30s", "--liveness-timeout", "5s"),
    )
    session = opencode_server.create_session()
    lost = opencode_server.send_prompt(session, "HANG")
    daemon.wait_for_log(lambda r: r.get("event") == "prompt.accepted")
    stopped_at = time.time()
    opencode_server.stop()
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 0)
    measure("server stopped -> stream_up 0 (s)", time.time() - stopped_at)
    assert daemon.healthz().status_code == 503
    assert daemon.healthz().json()["servers"]["local"]["live"] is False
    opencode_server.start()
    # The stream's retries were backing off while the server was away: the next may be a whole
    # backoff cap after the server is back.
    daemon.wait_for_sample(
        "opencode_watchdog_stream_up", SERVER, lambda v: v == 1, timeout=PATIENCE + RETRY_CAP
    )
    assert (daemon.sample("opencode_watchdog_stream_reconnects", SERVER) or 0) >= 1
    dropped = alert(webhook, "firing", "dropped", lost)
    assert dropped["reason"] == "server_restart"
    fresh = opencode_server.create_session()
    message = opencode_server.send_prompt(fresh, "hello")
    opencode_server.wait_for_reply(fresh, message)
    settle(
        daemon,
        expect(accepted=2, completed_answered=1, completed_dropped=1, stall_dropped=1),
        "the lost prompt dropped and the new one answered",
    )
    assert daemon.healthz().status_code == 200


def test_silent_stream_is_detected_within_the_liveness_window(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    measure: Measure,
) -> None:
    """A connection that stays open but carries nothing (heartbeats included) is declared dead
    after --liveness-timeout, and a new connection is opened."""
    proxy = FreezingProxy(opencode_server.port)
    try:
        daemon = daemon_factory(
            ["--server", f"local={proxy.url}", "--liveness-timeout", "4s", "--log-format", "json"],
            env=opencode_server.daemon_env(),
        )
        daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
        frozen_at = time.time()
        proxy.freeze()
        down = daemon.wait_for_log(lambda r: r.get("event") == "stream.down")
        detected = time.time() - frozen_at
        assert "no data" in down["error"]
        daemon.wait_for_sample("opencode_watchdog_stream_reconnects", SERVER)
        daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
        assert proxy.connections >= 2
        measure("silent stream detected after (s), liveness 4 s", detected)
    finally:
        proxy.close()


def test_wrong_password_is_reported_and_never_printed(
    opencode_server: OpenCodeServer, daemon_factory: DaemonFactory
) -> None:
    """Bad credentials: the daemon keeps running, says authentication failed, never shows the
    password, and does not retry in a tight loop."""
    wrong = "not-the-password-0xC0FFEE"
    daemon = daemon_factory(
        ["--server", opencode_server.server_arg(), "--log-format", "json"],
        env={"OPENCODE_SERVER_PASSWORD": wrong},
    )
    down = daemon.wait_for_log(lambda r: r.get("event") == "stream.down")
    assert down["level"] == "error"
    assert "401" in down["error"]
    assert "check the username and password" in down["error"]
    health = daemon.healthz()
    assert health.status_code == 503
    assert health.json()["servers"]["local"]["state"] == "auth_failed"
    assert daemon.returncode is None
    assert len(daemon.logs("stream.down")) == 1  # the next try waits at least 30 s
    output = "\n".join(daemon.stdout_lines + daemon.stderr_lines) + daemon.metrics_text()
    assert wrong not in output
    assert wrong not in str(daemon.status())


def test_one_server_down_does_not_delay_the_other(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    measure: Measure,
) -> None:
    """Two servers, one refusing connections: the live one's stall is still reported on time."""
    dead = f"http://127.0.0.1:{free_port()}"
    daemon = daemon_factory(
        [
            "--server",
            opencode_server.server_arg(),
            "--server",
            f"dead={dead}",
            "--webhook",
            webhook.url,
            "--first-response-timeout",
            "3s",
            "--log-format",
            "json",
        ],
        env=opencode_server.daemon_env(),
    )
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    refused = daemon.wait_for_log(
        lambda r: r.get("event") == "stream.down" and r.get("server") == "dead"
    )
    assert "connection refused" in refused["error"]
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    body = alert(webhook, "firing", "no_response", message)
    assert body["server"] == "local"
    measure("stall lateness with a second server down (s)", body["waited_seconds"] - 3.0)
    assert daemon.sample("opencode_watchdog_stream_up", {"server": "dead"}) == 0
    assert daemon.healthz().status_code == 503


def test_sigterm_exits_zero_promptly(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    measure: Measure,
) -> None:
    """SIGTERM ends the daemon cleanly with exit code 0."""
    daemon = watch(daemon_factory, opencode_server, webhook, ())
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    # The daemon may spend its shutdown grace delivering alerts; then it must be gone.
    exits = DEFAULT_SHUTDOWN_GRACE + PATIENCE
    wait_until(lambda: daemon.returncode is not None or None, exits, "the daemon to exit")
    measure("SIGTERM -> exit (s)", time.monotonic() - started)
    assert daemon.returncode == 0
    assert daemon.logs("daemon.stopped")


def test_sighup_changes_a_timeout_without_losing_pending_prompts(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    tmp_path: Path,
) -> None:
    """A hung prompt waits under a 10-minute timeout; the config file drops it to 2 s and SIGHUP
    applies it: the same prompt (no new acceptance) stalls."""
    config = tmp_path / "watchdog.toml"
    config.write_text('first_response_timeout = "10m"\n')
    daemon = daemon_factory(
        [
            "--config",
            str(config),
            "--server",
            opencode_server.server_arg(),
            "--webhook",
            webhook.url,
            "--log-format",
            "json",
        ],
        env=opencode_server.daemon_env(),
    )
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    daemon.wait_for_sample("opencode_watchdog_prompts_pending", {**SERVER, "state": "waiting"})
    config.write_text('first_response_timeout = "2s"\n')
    daemon.send_signal(signal.SIGHUP)
    reloaded = daemon.wait_for_log(lambda r: r.get("event") == "config.reloaded")
    assert reloaded["first_response_timeout"] == 2.0
    body = alert(webhook, "firing", "no_response", message)
    assert body["session_id"] == session
    assert counts(daemon) == expect(accepted=1, stall_no_response=1)


@pytest.mark.own_server
def test_prompts_in_two_project_directories_are_reconciled_per_directory(
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    tmp_path: Path,
) -> None:
    """One server, two project directories: a watchdog started after both prompts hung finds
    both through REST (which answers per directory) and reports each with its directory."""
    other = tmp_path / "other-project"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    home_session = opencode_server.create_session()
    other_session = opencode_server.create_session(directory=other)
    home_message = opencode_server.send_prompt(home_session, "HANG")
    other_message = opencode_server.send_prompt(other_session, "HANG", directory=other)
    opencode_server.wait_for_status(other_session, "busy", directory=other)
    daemon = watch(daemon_factory, opencode_server, webhook, ("--first-response-timeout", "3s"))
    home = alert(webhook, "firing", "no_response", home_message)
    away = alert(webhook, "firing", "no_response", other_message)
    assert home["directory"] in (None, str(opencode_server.project_dir))
    assert away["directory"] == str(other)
    assert counts(daemon)["stall:no_response"] == 2
