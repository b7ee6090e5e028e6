"""The status page in a real browser: headless Chromium loads `/` from the real daemon watching a
real `opencode serve` with a stalled prompt, and the rendered DOM is checked."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.pagedom import PageDom

from .conftest import DaemonFactory
from .harness import OpenCodeServer, wait_until

SERVER = {"server": "local"}
PHONE = (412, 915)  # CSS pixels of a common Android phone
PROMPT = "please HANG, the secret prompt text"


def chromium() -> str:
    """The browser; a missing one fails the test (scripts/ensure-debian-tools.sh installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: run scripts/ensure-debian-tools.sh (as root)")
    return found


def browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``url``; as root it needs --no-sandbox (the page runs no script)."""
    flags = ["--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")
    done = subprocess.run(
        [chromium(), *flags, *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(profile)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_status_page_shows_the_stalled_prompt_in_chromium(
    opencode_server: OpenCodeServer, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """A prompt the model never answers shows on `/`, as Chromium renders it: the server's
    stream up, the prompt stalled with its session, directory and model, the no_response stall
    firing, the three endpoint links; neither the prompt's text nor the password appears."""
    daemon = daemon_factory(
        [
            "--server",
            opencode_server.server_arg(),
            "--log-format",
            "json",
            "--first-response-timeout",
            "2s",
            "--inactivity-timeout",
            "20s",
        ],
        env=opencode_server.daemon_env(),
    )
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, PROMPT)
    daemon.wait_for_sample(
        "opencode_watchdog_prompts_pending", {**SERVER, "state": "stalled"}, lambda v: v == 1
    )

    # The model is known once OpenCode opens the reply; on a loaded machine that can come after
    # the stall, so wait for it (as served) before asking the browser.
    def model_known() -> bool | None:
        rows = PageDom(daemon.get("/").text).of("prompt")
        return (len(rows) == 1 and rows[0].cells.get("model") != "-") or None

    wait_until(model_known, 30, "the page to show the prompt's model", 0.1)

    dom_text = browse(f"{daemon.base_url}/", tmp_path / "profile", "--dump-dom").stdout
    dom = PageDom(dom_text)
    assert dom.servers == [{"class": "server", "data-server": "local", "data-state": "up"}]
    [prompt] = dom.of("prompt")
    assert prompt.attrs["data-state"] == "stalled"
    assert prompt.cells["session"] == session
    assert prompt.cells["message"] == message
    assert prompt.cells["directory"] == str(opencode_server.project_dir)
    assert prompt.cells["model"] == "fake/fake-1"
    assert prompt.cells["age"].endswith(" s")
    [stall] = dom.of("incident")
    assert stall.attrs["data-kind"] == "no_response"
    assert stall.cells["now"] == "firing"
    assert stall.cells["session"] == session
    assert stall.cells["cause"] == "no model output within the first-response timeout"
    assert dom.links == ["/metrics", "/status", "/healthz"]
    assert dom.title == "opencode-watchdog: 1/1 up, 1 pending"
    assert "secret prompt text" not in dom_text
    assert opencode_server.password not in dom_text

    shot = tmp_path / "phone.png"
    browse(
        f"{daemon.base_url}/",
        tmp_path / "profile",
        f"--window-size={PHONE[0]},{PHONE[1]}",
        "--hide-scrollbars",
        f"--screenshot={shot}",
    )
    assert png_size(shot) == PHONE


def test_status_page_shows_sessions_and_the_cause_of_a_failure_in_chromium(
    opencode_server: OpenCodeServer, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """The seed's failure (an unknown agent: 204, nothing stored, only `session.error`) and a
    normal answered prompt, as Chromium renders `/`: both sessions in the sessions section (the
    answered one idle with its outcome and history, the failed one failed), and the failed row
    shows the server's message, that nothing was stored, and that no model was named."""
    daemon = daemon_factory(
        ["--server", opencode_server.server_arg(), "--log-format", "json"],
        env=opencode_server.daemon_env(),
    )
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    answered = opencode_server.create_session()
    message = opencode_server.send_prompt(answered, "hello, the secret prompt text")
    opencode_server.wait_for_reply(answered, message)
    daemon.wait_for_sample(
        "opencode_watchdog_prompts_completed_total",
        {**SERVER, "outcome": "answered"},
        lambda v: v == 1,
    )
    failing = opencode_server.create_session()
    response = opencode_server.client.post(
        f"/session/{failing}/prompt_async",
        json={"agent": "no-such-agent", "parts": [{"type": "text", "text": "secret prompt text"}]},
    )
    assert response.status_code == 204
    daemon.wait_for_sample(
        "opencode_watchdog_prompts_completed_total",
        {**SERVER, "outcome": "failed"},
        lambda v: v == 1,
    )

    dom_text = browse(f"{daemon.base_url}/", tmp_path / "profile", "--dump-dom").stdout
    dom = PageDom(dom_text)
    sessions = {row.attrs["data-session"]: row for row in dom.of("session")}
    assert list(sessions) == [failing, answered]  # most recent first
    done = sessions[answered]
    assert done.attrs["data-state"] == "idle"
    assert done.cells["state"] == "idle"
    assert done.cells["directory"] == str(opencode_server.project_dir)
    assert done.cells["pending"] == "0"
    assert done.cells["last outcome"].startswith("answered (")
    history = done.cells["history"]
    assert history.startswith(("2 states", "3 states", "4 states"))
    # newest first: idle now ("so far"), after working
    assert history.split("states", 1)[1].lstrip().startswith("idle")
    assert "so far" in history
    assert history.index("idle") < history.index("working")
    assert sessions[failing].cells["state"] == "failed"
    assert sessions[failing].cells["last outcome"].startswith("failed (")
    [failure] = dom.of("incident")
    assert failure.attrs["data-kind"] == "failed"
    assert failure.cells["cause"] == (
        'UnknownError: Agent not found: "no-such-agent". Available agents: build, explore, '
        "general, plan"
    )
    assert failure.cells["now"] == "ended failed"
    assert failure.cells["session"] == failing
    assert failure.cells["message"] == "not stored"
    assert failure.cells["model"] == "unknown: nothing was stored"
    assert "secret prompt text" not in dom_text
    assert opencode_server.password not in dom_text
