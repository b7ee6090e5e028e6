"""A step of the wall clock (NTP after a suspend, a VM resume) neither fires nor silences a stall:
the real daemon under libfaketime (Debian's faketime, monotonic clock left real) against a real
`opencode serve` 1.18.33 whose prompt hangs."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import DaemonFactory
from .harness import PATIENCE, OpenCodeServer, WebhookReceiver

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
HOUR = 3600


@pytest.mark.parametrize("step", [HOUR, -HOUR], ids=["forward", "backward"])
def test_a_wall_clock_step_moves_no_deadline(
    step: int,
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    daemon_factory: DaemonFactory,
    tmp_path: Path,
) -> None:
    """The hanging prompt's no_response fires after its timeout of real time, saying it waited
    that long, whichever way the daemon's wall clock jumped an hour meanwhile (before: +1 h fired
    3 s after the prompt with 3 605 s waited; -1 h did not fire at all)."""
    assert LIBFAKETIME.exists(), "faketime is missing: scripts/ensure-debian-tools.sh installs it"
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    timeout = opencode_server.quick_timeout()
    daemon = daemon_factory(
        [
            "--server", opencode_server.server_arg(),
            "--webhook", webhook.url,
            "--log-format", "json",
            "--first-response-timeout", f"{timeout}s",
        ],
        env={
            **opencode_server.daemon_env(),
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(offset),
            "FAKETIME_NO_CACHE": "1",  # read the offset on every call: the step is immediate
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # only the wall clock steps, as NTP steps it
        },
    )  # fmt: skip
    daemon.wait_for_sample("opencode_watchdog_stream_up", {"server": "local"}, lambda v: v == 1)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    session = opencode_server.create_session()
    message = opencode_server.send_prompt(session, "HANG")
    # The log keeps history: this holds however late the test looks (a gauge would not).
    daemon.wait_for_log(
        lambda r: r.get("event") == "prompt.accepted" and r.get("message_id") == message
    )
    offset.write_text(f"{step:+d}\n")
    stall = webhook.wait_for(
        lambda b: b.get("kind") == "no_response" and b.get("message_id") == message,
        timeout=timeout + PATIENCE,
    )
    assert stall["status"] == "firing"
    # It waited its timeout (plus the moment the turn took to start), not an hour more or less.
    assert timeout <= stall["waited_seconds"] < HOUR
    # What people read does show the step: the alert's time is on the stepped wall clock.
    logged = daemon.wait_for_log(
        lambda r: r.get("event") == "prompt.stalled" and r.get("message_id") == message
    )
    assert logged["waited_seconds"] == stall["waited_seconds"]
    opencode_server.abort(session)
