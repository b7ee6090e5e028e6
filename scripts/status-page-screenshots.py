"""Retake the README's status-page pictures (docs/status-page.png, docs/status-page-phone.png) and
print `opencode-watchdog status` from the same moment.

A developer script, not a test. On 127.0.0.1 only it starts the test suite's fake LLM, one real
`opencode serve` (tests/e2e/harness.py; `scripts/install-opencode.sh` installs it) and the real
daemon (5 s first-response and inactivity timeouts), then makes the page show every kind of row:

* a prompt answered (its session idle, outcome answered, with a history);
* the seed's failure: an unknown agent, 204, nothing stored, only `session.error`;
* a prompt the model never answers (no_response, still firing);
* a reply that goes quiet mid-way (inactive, still firing);
* a tool call waiting for a person's permission (blocked, no stall);
* a prompt still inside its timeout when the pictures are taken.

Then headless Chromium (`chromium --headless --no-sandbox` as root) takes the desktop picture
(1100 CSS pixels wide, the whole page) and the phone one (412 x 915). Run it from the repository:

    .venv/bin/python scripts/status-page-screenshots.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.fakellm import FakeLLM  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    PATIENCE,
    DaemonProcess,
    OpenCodeServer,
    free_port,
    wait_until,
)

DESKTOP = (1100, 1500)
PHONE = (412, 915)
TIMEOUT = 5.0


def chromium(url: str, profile: Path, *extra: str) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not installed: run scripts/ensure-debian-tools.sh (as root)")
    flags = ["--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")
    subprocess.run(  # noqa: S603 - the browser found above, arguments made here
        [browser, *flags, "--hide-scrollbars", *extra, url],
        check=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "HOME": str(profile)},
    )


def pending(daemon: DaemonProcess, state: str) -> float:
    return (
        daemon.sample("opencode_watchdog_prompts_pending", {"server": "laptop", "state": state})
        or 0
    )


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="watchdog-shots-"))
    with FakeLLM() as llm:
        server = OpenCodeServer(work / "laptop", llm.base_url)
        server.start()
        try:
            server.warm_up()
            daemon = DaemonProcess(
                [
                    "--server",
                    server.server_arg("laptop"),
                    "--listen",
                    f"127.0.0.1:{free_port()}",
                    "--log-format",
                    "json",
                    "--first-response-timeout",
                    f"{TIMEOUT:g}s",
                    "--inactivity-timeout",
                    f"{TIMEOUT:g}s",
                ],
                env=server.daemon_env(),
            )
            try:
                take(server, daemon, work)
            finally:
                daemon.stop()
        finally:
            server.close()
    shutil.rmtree(work, ignore_errors=True)


def take(server: OpenCodeServer, daemon: DaemonProcess, work: Path) -> None:
    daemon.wait_listening()
    daemon.wait_for_sample("opencode_watchdog_stream_up", {"server": "laptop"}, lambda v: v == 1)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    answered = server.create_session()
    server.wait_for_reply(answered, server.send_prompt(answered, "hello"))
    failing = server.create_session()
    body: dict[str, Any] = {"agent": "no-such-agent", "parts": [{"type": "text", "text": "hi"}]}
    assert server.client.post(f"/session/{failing}/prompt_async", json=body).status_code == 204
    hung = server.create_session()
    server.send_prompt(hung, "please HANG")
    quiet = server.create_session()
    server.send_prompt(quiet, "please HANGMID")
    asking = server.create_session()
    server.send_prompt(asking, "run a TOOL please")
    server.wait_for_permission(asking)
    wait_until(lambda: pending(daemon, "stalled") == 2 or None, PATIENCE, "two stalls")
    fresh = server.create_session()
    server.send_prompt(fresh, "please HANG")
    wait_until(lambda: pending(daemon, "waiting") >= 1 or None, PATIENCE, "the fresh prompt")
    time.sleep(1.0)  # so its age reads as a second or so, not 0.0 s
    profile = work / "profile"
    url = f"{daemon.base_url}/"
    desktop = ROOT / "docs" / "status-page.png"
    phone = ROOT / "docs" / "status-page-phone.png"
    chromium(url, profile, f"--window-size={DESKTOP[0]},{DESKTOP[1]}", f"--screenshot={desktop}")
    chromium(url, profile, f"--window-size={PHONE[0]},{PHONE[1]}", f"--screenshot={phone}")
    print(f"wrote {desktop.relative_to(ROOT)} and {phone.relative_to(ROOT)}")
    status = subprocess.run(  # noqa: S603 - this Python, arguments made here
        [sys.executable, "-m", "watchdog", "status", "--url", daemon.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    print(f"$ opencode-watchdog status; echo $?\n{status.stdout}{status.returncode}")


if __name__ == "__main__":
    main()
