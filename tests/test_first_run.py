"""A new user's first run: the demo, the CLI's errors, the metrics page and the console log."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import structlog

from tests.conftest import wait_for
from watchdog import __version__
from watchdog.app.config import Config
from watchdog.app.daemon import Daemon
from watchdog.app.logs import configure
from watchdog.core.settings import ServerConfig, Timeouts


def watchdog_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_prints_nothing_misleading_and_ends_with_a_summary() -> None:
    """The demo logs no warning other than its two stalls, starts at info level, answers its own
    REST reads (no 404 anywhere) and ends with a summary naming each stall and why it fired."""
    done = watchdog_cli("demo", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    logs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    start = next(e for e in logs if e["event"] == "demo.start")
    assert start["level"] == "info"
    warnings = [(e["event"], e.get("kind")) for e in logs if e["level"] != "info"]
    assert warnings == [("prompt.stalled", "no_response"), ("prompt.stalled", "inactive")]
    assert "answered HTTP" not in done.stdout
    assert [e["event"] for e in logs if e["event"].startswith("reconcile.")] == ["reconcile.done"]
    summary = done.stdout[done.stdout.index("# DEMO summary") :].splitlines()
    assert summary[0] == "# DEMO summary: 2 stall(s) detected"
    assert "no_response" in summary[1]
    assert "no model output within the first-response timeout (2 s)" in summary[1]
    assert "then aborted" in summary[1]
    assert "inactive" in summary[2]
    assert "still firing" in summary[2]
    assert 'opencode_watchdog_stalls_total{kind="inactive",server="demo"} 1.0' in done.stdout
    # The same bundled recording through `replay` on a virtual clock sees the same two stalls.
    replayed = done.stdout[done.stdout.index("# The same recording replayed") :]
    assert "stalls: no_response 1, inactive 1\n" in replayed
    assert "outcomes: answered 1, aborted 1, still pending 1\n" in replayed


def test_demo_on_a_busy_port_is_one_line_and_exit_2() -> None:
    """`demo --listen` on a taken port names the option in one line, no traceback, exit code 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = watchdog_cli("demo", "--listen", f"127.0.0.1:{port}", "--log-format", "json")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"opencode-watchdog: error: --listen: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]


@pytest.mark.parametrize("command", ["run", "demo"])
def test_unknown_flag_of_a_subcommand_prints_that_subcommands_usage(command: str) -> None:
    """`run --bogus` shows `run`'s usage (its flags), not the top-level one, and exits 2."""
    done = watchdog_cli(command, "--bogus", timeout=20)
    assert done.returncode == 2
    assert done.stderr.startswith(f"usage: opencode-watchdog {command} ")
    assert done.stderr.splitlines()[-1] == (
        f"opencode-watchdog {command}: error: unrecognized arguments: --bogus"
    )


def test_console_lines_lead_with_the_kind_and_stay_short() -> None:
    """On a terminal a stall reads `time level event kind=… server=…`, ids after, no timestamp
    repeats; the JSON format keeps every field."""
    out = io.StringIO()
    configure("console", "info", out)
    log = structlog.get_logger("t")
    fields = {
        "server": "laptop",
        "session_id": "ses_dee194af3ffeY1f2Y647oauJO3",
        "message_id": "msg_211e6b510001B1tGW8umyyoq65",
        "accepted_at": "2026-11-25T10:49:43.936Z",
        "directory": "/home/someone/projects/a-rather-long-project-directory-name",
        "provider": "anthropic",
        "model": "claude-sonnet",
    }
    log.warning("prompt.stalled", waited_seconds=300.001, **fields, kind="no_response")
    line = out.getvalue().rstrip("\n")
    assert line.split()[1:4] == ["[warning]", "prompt.stalled", "kind=no_response"]
    assert line.split()[4:7] == [
        "server=laptop",
        "waited=300.0s",
        "session=ses_dee194af3ffeY1f2Y647oauJO3",
    ]
    assert line.endswith(" model=anthropic/claude-sonnet")
    assert "accepted_at" not in line
    assert "directory" not in line
    assert len(line) < 200
    out = io.StringIO()
    configure("json", "info", out)
    structlog.get_logger("t").warning("prompt.stalled", kind="no_response", **fields)
    assert json.loads(out.getvalue())["directory"] == fields["directory"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_metrics_have_process_series_and_no_created_series_and_requests_name_us() -> None:
    """/metrics has process_* series for the daemon itself and no `_created` series; the stream,
    REST and webhook requests all carry `User-Agent: opencode-watchdog/<version>`."""
    agents: dict[str, str] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        agents[request.url.path] = request.headers.get("user-agent", "")
        if request.url.path == "/global/event":
            body = (
                b'data: {"payload":{"type":"server.connected","properties":{}}}\n\n'
                b'data: {"payload":{"type":"session.status","properties":'
                b'{"sessionID":"ses_1","status":{"type":"busy"}}}}\n\n'
                b'data: {"payload":{"type":"message.updated","properties":{"info":'
                b'{"id":"msg_1","sessionID":"ses_1","role":"user","time":{"created":1}}}}}\n\n'
            )

            async def hold() -> AsyncIterator[bytes]:
                yield body
                await anyio.sleep_forever()

            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=hold()
            )
        if request.url.path == "/hook":
            return httpx.Response(200)
        return httpx.Response(200, json=[] if request.url.path != "/session/status" else {})

    config = Config(
        servers=(ServerConfig("oc", "http://oc.test"),),
        listen_port=0,
        timeouts=Timeouts(first_response=0.2, inactivity=5, tool=5),
        webhooks=("http://hook.test/hook",),
    )
    daemon = Daemon(config, transport=httpx.MockTransport(handler))
    async with anyio.create_task_group() as tg:
        port = await tg.start(daemon.run)
        await wait_for(lambda: "/hook" in agents, "the webhook delivery")
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        tg.cancel_scope.cancel()
    assert "_created" not in text
    assert "\nprocess_cpu_seconds_total " in text
    assert "\nprocess_resident_memory_bytes " in text
    assert {"/global/event", "/session/status", "/hook"} <= set(agents)
    assert set(agents.values()) == {f"opencode-watchdog/{__version__}"}
