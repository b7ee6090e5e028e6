"""What an operator sees, against the real `opencode serve` 1.18.33 and the real daemon: the seed's
failure (an unknown agent: 204, nothing stored, only `session.error`) and a normal answered prompt
in `/status` (recent problems, sessions, history), in `status` (table and exit code), in the per
provider/model metrics, and the first-run messages (page URL, 401 without a password, a refused
connection worded alike by `run` and `probe`, `status` with no daemon)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.pagedom import PageDom
from tests.test_grafana_dashboard import metric_names_in, series_names

from .conftest import DaemonFactory
from .harness import PATIENCE, REPO_ROOT, OpenCodeServer, WebhookReceiver, free_port, wait_until
from .test_never_answered import failed_alert, post_prompt
from .test_scenarios import CALM, SERVER, expect, settle, watch

AGENT_MESSAGE = 'Agent not found: "no-such-agent". Available agents: build, explore, general, plan'
FAKE = {**SERVER, "provider": "fake", "model": "fake-1"}
UNKNOWN = {**SERVER, "provider": "unknown", "model": "unknown"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE_")}
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *args],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )


def by_id(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {item[key]: item for item in items}


def test_the_seed_failure_and_an_answer_in_status_sessions_metrics_and_the_exit_code(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    daemon = watch(daemon_factory, opencode_server, webhook, CALM)
    [started] = daemon.logs("daemon.started")
    assert started["page"] == f"{daemon.base_url}/"

    answered = opencode_server.create_session()
    message = opencode_server.send_prompt(answered, "hello")
    opencode_server.wait_for_reply(answered, message)
    settle(daemon, expect(accepted=1, completed_answered=1), "the answered prompt")
    failing = opencode_server.create_session()
    assert post_prompt(opencode_server, failing, agent="no-such-agent") == 204
    failed_alert(webhook, failing)
    settle(
        daemon,
        expect(accepted=2, completed_answered=1, completed_failed=1, stall_failed=1),
        "the failure",
    )

    status = daemon.status()
    # Recent problems: the failure, with the server's message, not firing (it is over at once).
    [failure] = status["recent"]
    assert (failure["kind"], failure["session_id"], failure["message_id"]) == (
        "failed",
        failing,
        None,
    )
    assert failure["cause"]["name"] == "UnknownError"
    assert failure["cause"]["message"] == AGENT_MESSAGE
    assert (failure["firing"], failure["outcome"]) == (False, "failed")
    # Sessions: both, the failed one most recent; the answered one idle, with its history.
    [server] = status["servers"]
    sessions = by_id(server["sessions"], "session_id")
    assert [s["session_id"] for s in server["sessions"][:2]] == [failing, answered]
    assert (sessions[failing]["state"], sessions[failing]["last_outcome"]) == ("failed", "failed")
    done = sessions[answered]
    assert (done["state"], done["pending"], done["last_outcome"]) == ("idle", 0, "answered")
    states = [h["state"] for h in done["history"]]
    assert states[-2:] == ["working", "idle"]
    assert done["history"][-1]["current"] is True
    assert all(h["lasted_seconds"] >= 0 for h in done["history"])
    assert done["directory"] == str(opencode_server.project_dir)

    # `status`: exit 1 for a failure within 15 minutes, with the cause; 0 with a window shorter
    # than the time since (1 ms: the failure is at least a REST round trip old).
    shown = cli("status", "--url", daemon.base_url)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert AGENT_MESSAGE in shown.stdout
    assert f"PROBLEM: local: prompt in session {failing} failed" in shown.stdout
    assert answered in shown.stdout.split("SESSIONS")[1]
    assert cli("status", "--url", daemon.base_url, "--since", "1ms").returncode == 0

    # Per provider and model: the answer's tokens as the server stored them, its first response.
    [reply] = [m for m in opencode_server.messages(answered) if m["info"]["role"] == "assistant"]
    tokens = reply["info"]["tokens"]
    assert tokens["input"] > 0
    for kind, value in (
        ("input", tokens["input"]),
        ("output", tokens["output"]),
        ("reasoning", tokens["reasoning"]),
        ("cache_read", tokens["cache"]["read"]),
        ("cache_write", tokens["cache"]["write"]),
    ):
        assert daemon.sample("opencode_watchdog_tokens_total", {**FAKE, "type": kind}) == value
    assert daemon.sample("opencode_watchdog_model_first_response_seconds_count", FAKE) == 1
    assert daemon.sample("opencode_watchdog_cost_usd_total", FAKE) == reply["info"]["cost"]
    assert daemon.sample("opencode_watchdog_model_failures_total", FAKE) == 0
    # The failure named no model: nothing was stored, and its session never had a reply.
    assert daemon.sample("opencode_watchdog_model_failures_total", UNKNOWN) == 1
    stalls = {**UNKNOWN, "kind": "failed"}
    assert daemon.sample("opencode_watchdog_model_stalls_total", stalls) == 1


def test_messages_a_person_can_act_on(
    opencode_server: OpenCodeServer, daemon_factory: DaemonFactory
) -> None:
    """No password at all against a server that asks for one; a refused connection in `run` and
    in `probe`; `status` with no daemon behind --url."""
    no_password = daemon_factory(["--server", opencode_server.server_arg(), "--log-format", "json"])
    down = no_password.wait_for_log(lambda r: r.get("event") == "stream.down")
    assert "answered 401 (the server asks for a password): no password was given" in down["error"]

    port = free_port()
    refused = daemon_factory(["--server", f"dead=http://127.0.0.1:{port}", "--log-format", "json"])
    gone = refused.wait_for_log(lambda r: r.get("event") == "stream.down")
    # `URL: connection refused`, the URL being the first the daemon asks (/api/info with api auto)
    assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/[a-z/]+: connection refused", gone["error"])
    probe = cli("probe", "--server", f"http://127.0.0.1:{port}")
    assert probe.returncode == 1
    assert f"GET http://127.0.0.1:{port}/session: connection refused" in probe.stderr

    status = cli("status", "--url", f"http://127.0.0.1:{port}")
    assert status.returncode == 3
    assert status.stderr == (
        f"opencode-watchdog status: cannot read http://127.0.0.1:{port}/status "
        "(connection refused): is the daemon running? (--url)\n"
    )


def test_replay_of_a_fresh_recording_works_as_the_readme_says(
    opencode_server: OpenCodeServer, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """`run --record events.jsonl`, one answered prompt, then the README's replay line on the
    fresh recording (no `events.jsonl.1` yet): it replays the prompt, answered, no stall."""
    recording = tmp_path / "events.jsonl"
    daemon = daemon_factory(
        [
            "--server",
            opencode_server.server_arg(),
            "--log-format",
            "json",
            "--record",
            str(recording),
        ],
        env=opencode_server.daemon_env(),
    )
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "hello")
    opencode_server.wait_for_reply(session, message)
    settle(daemon, expect(accepted=1, completed_answered=1), "the answered prompt")
    assert daemon.stop() == 0
    assert not (tmp_path / "events.jsonl.1").exists()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "watchdog",
            "replay",
            "events.jsonl",
            "--sweep",
            "30s,60s,120s,300s",
        ],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert ": 1 prompt(s)" in done.stdout.splitlines()[0]
    assert "\nstalls: none\noutcomes: answered 1, still pending 0\n" in done.stdout


def session_in(daemon: Any, session_id: str) -> dict[str, Any] | None:
    for session in daemon.status()["servers"][0]["sessions"]:
        if session["session_id"] == session_id:
            return dict(session)
    return None


def test_sessions_say_retrying_with_the_attempt_and_waiting_for_a_person(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """A provider answering 500 (OpenCode retries it) and a tool waiting for permission: each
    session's state in words in `/status` and on the page, with the retry's attempt and next try."""
    daemon = watch(daemon_factory, opencode_server, webhook, CALM)
    retrying = opencode_server.create_session()
    opencode_server.send_prompt(retrying, "FAIL please")
    asking = opencode_server.create_session()
    opencode_server.send_prompt(asking, "run a TOOL please")
    opencode_server.wait_for_permission(asking)

    def retry_known() -> dict[str, Any] | None:
        session = session_in(daemon, retrying)
        return session if session and session["state"] == "retrying" else None

    session = wait_until(retry_known, PATIENCE, "the retrying session", 0.2)
    assert session["retry"]["attempt"] >= 1
    assert session["retry"]["message"] == "upstream exploded"
    assert re.fullmatch(
        r"retrying \(attempt \d+, next (try in \d+ s|try due now)\)", session["words"]
    )
    waiting = wait_until(
        lambda: (s := session_in(daemon, asking)) and s["state"] == "waiting for a person" and s,
        PATIENCE,
        "the session waiting for a person",
        0.2,
    )
    assert waiting["pending"] == 1
    page = PageDom(daemon.get("/").text)
    states = {row.attrs["data-session"]: row.cells["state"] for row in page.of("session")}
    assert states[asking] == "waiting for a person"
    assert states[retrying].startswith("retrying (attempt ")
    opencode_server.abort(retrying)
    opencode_server.abort(asking)


def test_the_dashboards_model_panels_read_series_the_real_daemon_exports(
    opencode_server: OpenCodeServer, webhook: WebhookReceiver, daemon_factory: DaemonFactory
) -> None:
    """After one answered prompt, every metric the Providers and models panels query is on the
    real daemon's /metrics (the unit test reads a registry; this reads the daemon)."""
    daemon = watch(daemon_factory, opencode_server, webhook, CALM)
    session = opencode_server.create_session()
    opencode_server.wait_for_reply(session, opencode_server.send_prompt(session, "hello"))
    settle(daemon, expect(accepted=1, completed_answered=1), "the answered prompt")
    dashboard = json.loads((REPO_ROOT / "grafana/dashboards/opencode-watchdog.json").read_text())
    row = next(i for i, p in enumerate(dashboard["panels"]) if p["title"] == "Providers and models")
    panels = dashboard["panels"][row + 1 :]
    used = {name for p in panels for t in p["targets"] for name in metric_names_in(t["expr"])}
    assert "opencode_watchdog_tokens_total" in used
    assert used <= series_names(daemon.metrics_text())
