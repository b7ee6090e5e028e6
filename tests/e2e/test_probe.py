"""The admission probe and `status` against the real `opencode serve` 1.18.33 and the real daemon."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import httpx
import pytest

from watchdog.app.config import Config
from watchdog.app.daemon import Daemon
from watchdog.core.settings import ProbeShape, ServerConfig
from watchdog.io.probe import Probe, ProbeResult, ProbeSpec, Step

from .conftest import DaemonFactory
from .fakellm import FakeLLM
from .harness import (
    PATIENCE,
    REPO_ROOT,
    DaemonProcess,
    OpenCodeServer,
    WebhookReceiver,
    free_port,
    wait_until,
)
from .proxy import PromptSwallowingProxy

PROBE_TITLE = "opencode-watchdog probe"
SERVER = {"server": "local"}
_ANSI = re.compile("\033\\[")


def probe_cli(
    server: OpenCodeServer, *args: str, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `opencode-watchdog probe` as a cron job would (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "probe", "--server", url or server.url, *args],
        env={"OPENCODE_SERVER_PASSWORD": server.password, "PATH": "/usr/bin:/bin"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def status_cli(daemon_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `opencode-watchdog status` with its output piped (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "status", "--url", daemon_url, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )


def probe_sessions(server: OpenCodeServer) -> list[dict[str, Any]]:
    return [s for s in server.sessions() if s.get("title") == PROBE_TITLE]


@pytest.fixture
def swallowing_proxy(opencode_server: OpenCodeServer) -> Iterator[PromptSwallowingProxy]:
    proxy = PromptSwallowingProxy(opencode_server.url)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("shape", ["current", "legacy"])
def test_probe_passes_on_a_healthy_server_and_starts_no_turn(
    opencode_server: OpenCodeServer, fake_llm: FakeLLM, shape: str
) -> None:
    """Each shape exits 0; the server stored the message in the probe session and ran no model."""
    done = probe_cli(opencode_server, "--shape", shape, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True
    assert list(result["steps"]) == ["session", "accepted", "stored", "no_error"]
    (session,) = probe_sessions(opencode_server)
    assert result["session_id"] == session["id"]
    messages = [m["info"] for m in opencode_server.messages(session["id"])]
    # noReply: the user message is stored, and no turn starts (no assistant, no LLM request).
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["id"] == result["message_id"]
    assert opencode_server.session_status().get(session["id"]) is None
    assert fake_llm.request_count() == 0
    if shape == "current":
        # The server kept the id the probe made in OpenCode's own format (ms*4096+n, base62).
        match = re.fullmatch(r"msg_([0-9a-f]{12})[0-9A-Za-z]{14}", result["message_id"])
        assert match is not None
        made_ms = int(match.group(1), 16) // 4096
        assert abs(made_ms - (int(time.time() * 1000) % 2**36)) < 60_000
    else:
        # The legacy payload names agent and model; the server made the ids.
        assert messages[0]["agent"] == "build"
        assert messages[0]["model"] == {"providerID": "fake", "modelID": "fake-1"}


def test_probe_reuses_its_session_found_by_title(opencode_server: OpenCodeServer) -> None:
    """A second run (a new process) finds the probe session by its title instead of making one."""
    first = probe_cli(opencode_server, "--json")
    second = probe_cli(opencode_server, "--shape", "legacy", "--json")
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert json.loads(first.stdout)["session_id"] == json.loads(second.stdout)["session_id"]
    assert len(probe_sessions(opencode_server)) == 1


@pytest.mark.parametrize("shape", ["current", "legacy"])
def test_unknown_agent_fails_at_stored_with_the_server_message(
    opencode_server: OpenCodeServer, shape: str
) -> None:
    """The report's failure path: 204, nothing stored, only session.error; the reason is the server's."""
    done = probe_cli(opencode_server, "--shape", shape, "--agent", "no-such-agent")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"probe failed at stored (server 127.0.0.1:{opencode_server.port}")
    assert 'UnknownError: Agent not found: "no-such-agent"' in lines[0]
    (session,) = probe_sessions(opencode_server)
    assert opencode_server.messages(session["id"]) == []


def test_a_server_that_answers_204_and_does_nothing_fails_at_stored(
    opencode_server: OpenCodeServer, swallowing_proxy: PromptSwallowingProxy
) -> None:
    """Through a fault-injecting proxy that answers prompt_async 204 itself, the probe fails at stored."""
    done = probe_cli(opencode_server, "--stored-timeout", "2s", url=swallowing_proxy.url)
    assert done.returncode == 1
    assert swallowing_proxy.swallowed == 1
    line = done.stderr.strip()
    assert "probe failed at stored" in line
    assert "no user message stored within 2s of the 204" in line


def test_expect_reply_waits_for_the_assistant_answer(
    opencode_server: OpenCodeServer, fake_llm: FakeLLM
) -> None:
    """--expect-reply sends a real prompt (the model is called) and passes once the answer completes."""
    done = probe_cli(opencode_server, "--expect-reply", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert list(result["steps"]) == ["session", "accepted", "stored", "reply"]
    assert fake_llm.request_count() == 1
    replies = opencode_server.assistant_replies(result["session_id"], result["message_id"])
    assert replies
    assert replies[-1]["finish"] == "stop"


def test_expect_reply_with_an_unknown_model_fails_at_reply(
    opencode_server: OpenCodeServer,
) -> None:
    """A model the server does not have: stored, then session.error; the reply step says why."""
    done = probe_cli(opencode_server, "--expect-reply", "--model", "fake/no-such-model")
    assert done.returncode == 1
    assert "probe failed at reply" in done.stderr
    assert "Model not found: fake/no-such-model" in done.stderr


def start_probing(
    daemon_factory: DaemonFactory,
    server: OpenCodeServer,
    webhook: WebhookReceiver,
    *,
    url: str | None = None,
    extra: Sequence[str] = (),
) -> DaemonProcess:
    daemon = daemon_factory(
        [
            "--server",
            f"local={url or server.url}",
            "--webhook",
            webhook.url,
            "--log-format",
            "json",
            "--first-response-timeout",
            "2s",
            *extra,
        ],
        env=server.daemon_env(),
    )
    daemon.wait_for_sample("opencode_watchdog_stream_up", SERVER, lambda v: v == 1)
    return daemon


def test_daemon_probes_exports_metrics_and_never_counts_its_probes(
    daemon_factory: DaemonFactory, opencode_server: OpenCodeServer, webhook: WebhookReceiver
) -> None:
    """Probes every second with both shapes: success metrics, no prompt counted, no stall alert."""
    daemon = start_probing(
        daemon_factory,
        opencode_server,
        webhook,
        extra=["--probe-interval", "1s", "--probe-shape", "current", "--probe-shape", "legacy"],
    )
    for shape in ("current", "legacy"):
        labels = {**SERVER, "shape": shape}
        daemon.wait_for_sample("opencode_watchdog_probe_success", labels, lambda v: v == 1)
        assert daemon.sample("opencode_watchdog_probe_last_success_timestamp_seconds", labels)
        for step in ("session", "accepted", "stored", "no_error"):
            assert (
                daemon.sample("opencode_watchdog_probe_duration_seconds", {**labels, "step": step})
                is not None
            )
    (session,) = probe_sessions(opencode_server)
    # Several probes later (each stored a message), well past the 2 s first-response timeout.
    wait_until(
        lambda: len(opencode_server.messages(session["id"])) >= 6 or None,
        PATIENCE,
        "six probe messages",
    )
    time.sleep(3)
    assert daemon.sample("opencode_watchdog_prompts_accepted", SERVER) == 0
    assert daemon.sample("opencode_watchdog_stalls", SERVER) == 0
    assert daemon.status()["servers"][0]["pending"] == []
    assert webhook.requests == []
    # A real prompt on the same server still counts.
    real = opencode_server.create_session()
    opencode_server.send_prompt(real, "hello")
    daemon.wait_for_sample("opencode_watchdog_prompts_accepted", SERVER, lambda v: v == 1)
    probes = daemon.status()["servers"][0]["probes"]
    assert {p["shape"] for p in probes} == {"current", "legacy"}
    assert all(p["ok"] and p["at"].endswith("Z") for p in probes)


def test_failed_probe_alerts_in_every_sink_and_resolves(
    daemon_factory: DaemonFactory,
    opencode_server: OpenCodeServer,
    webhook: WebhookReceiver,
    swallowing_proxy: PromptSwallowingProxy,
) -> None:
    """Behind a fault-injecting proxy that swallows prompts the probe fails; it resolves once fixed."""
    daemon = start_probing(
        daemon_factory,
        opencode_server,
        webhook,
        url=swallowing_proxy.url,
        extra=["--probe-interval", "2s"],
    )
    firing = webhook.wait_for(lambda b: b.get("kind") == "probe_failed")
    assert firing["status"] == "firing"
    assert firing["server"] == "local"
    assert firing["shape"] == "current"
    assert firing["step"] == "stored"
    assert "no user message stored" in firing["reason"]
    log = daemon.wait_for_log(lambda r: r.get("event") == "probe.failed")
    assert log["step"] == "stored"
    labels = {**SERVER, "shape": "current"}
    assert daemon.sample("opencode_watchdog_probe_success", labels) == 0
    assert daemon.sample("opencode_watchdog_probe_last_success_timestamp_seconds", labels) is None
    swallowing_proxy.swallowing = False
    resolved = webhook.wait_for(
        lambda b: b.get("kind") == "probe_failed" and b["status"] == "resolved"
    )
    assert resolved["since"] == firing["since"]
    daemon.wait_for_sample("opencode_watchdog_probe_success", labels, lambda v: v == 1)
    assert daemon.wait_for_log(lambda r: r.get("event") == "probe.recovered")
    # One alert and one resolution, however many probes failed in between.
    assert [b["status"] for b in webhook.bodies if b.get("kind") == "probe_failed"] == [
        "firing",
        "resolved",
    ]
    assert daemon.sample("opencode_watchdog_prompts_accepted", SERVER) == 0


def test_after_a_restart_probe_sessions_are_known_by_title(
    daemon_factory: DaemonFactory, opencode_server: OpenCodeServer, webhook: WebhookReceiver
) -> None:
    """A daemon that did not make the probe session still leaves probes in it out of its counts."""
    assert probe_cli(opencode_server).returncode == 0  # the probe session exists before the daemon
    daemon = start_probing(daemon_factory, opencode_server, webhook)
    daemon.wait_for_log(lambda r: r.get("event") == "reconcile.done")
    for _ in range(2):
        assert probe_cli(opencode_server).returncode == 0  # e.g. from cron, beside the daemon
    real = opencode_server.create_session()
    opencode_server.send_prompt(real, "hello")
    daemon.wait_for_sample("opencode_watchdog_prompts_accepted", SERVER, lambda v: v >= 1)
    time.sleep(3)  # past the 2 s first-response timeout: a counted probe would stall now
    assert daemon.sample("opencode_watchdog_prompts_accepted", SERVER) == 1
    # The real prompt may stall on a cold server; nothing about the probe session may appear.
    (session,) = probe_sessions(opencode_server)
    about_probes = [r for r in daemon.logs() if r.get("session_id") == session["id"]]
    assert about_probes == []
    assert all(body["session_id"] == real for body in webhook.bodies)


def test_status_command_against_a_running_daemon(
    daemon_factory: DaemonFactory, opencode_server: OpenCodeServer, webhook: WebhookReceiver
) -> None:
    """Plain tables when piped; exit 0 while all is well, 1 with a stalled prompt; --json as served."""
    daemon = start_probing(
        daemon_factory, opencode_server, webhook, extra=["--probe-interval", "30s"]
    )
    daemon.wait_for_sample(
        "opencode_watchdog_probe_success", {**SERVER, "shape": "current"}, lambda v: v == 1
    )
    calm = status_cli(daemon.base_url)
    assert calm.returncode == 0, calm.stdout + calm.stderr
    assert _ANSI.search(calm.stdout) is None
    assert re.search(r"^local\s+v1\s+up\s", calm.stdout, re.MULTILINE)  # API, then stream
    assert re.search(r"^local\s+current\s+ok\s", calm.stdout, re.MULTILINE)
    assert "PENDING PROMPTS (0, oldest first)" in calm.stdout
    session = opencode_server.create_session()
    older = opencode_server.send_prompt(session, "please HANG")
    other = opencode_server.create_session()
    newer = opencode_server.send_prompt(other, "please HANG too")
    daemon.wait_for_sample(
        "opencode_watchdog_prompts_pending", {**SERVER, "state": "stalled"}, lambda v: v == 2
    )
    stalled = status_cli(daemon.base_url)
    assert stalled.returncode == 1
    assert stalled.stdout.index(older) < stalled.stdout.index(newer)  # oldest first
    assert re.search(rf"^local\s+stalled\s+\S+\s+{session}\s+{older}", stalled.stdout, re.M)
    assert f"PROBLEM: local: prompt {older} stalled" in stalled.stdout
    raw = status_cli(daemon.base_url, "--json")
    assert raw.returncode == 1
    document = json.loads(raw.stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["now"])
    stream = document["servers"][0]["stream"]
    assert stream["since"].endswith("Z")
    assert stream["last_event_at"].endswith("Z")
    assert document["servers"][0]["pending"][0]["accepted_at"].endswith("Z")
    opencode_server.abort(session)
    opencode_server.abort(other)


def test_status_command_when_no_daemon_answers() -> None:
    """Nothing listening: one line on stderr and exit 3."""
    done = status_cli(f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 3
    assert done.stderr.startswith("opencode-watchdog status: cannot read http://127.0.0.1:")


def test_a_probe_session_that_grew_large_is_replaced(opencode_server: OpenCodeServer) -> None:
    """Past its message limit the probe session is replaced by a new one and the old one deleted."""

    async def three_probes() -> list[str | None]:
        auth = ("opencode", opencode_server.password)
        async with httpx.AsyncClient(auth=auth, trust_env=False) as client:
            probe = Probe(client, opencode_server.url, "local", max_messages=2)
            spec = ProbeSpec(error_grace=0.2)
            return [(await probe.run(spec)).session_id for _ in range(3)]

    first, second, third = anyio.run(three_probes)
    assert first == second != third
    (session,) = probe_sessions(opencode_server)
    assert session["id"] == third
    assert [m["info"]["role"] for m in opencode_server.messages(session["id"])] == ["user"]


def test_the_daemons_probe_hears_the_server_error_on_the_daemons_stream(
    opencode_server: OpenCodeServer,
) -> None:
    """Inside the daemon a probe listens on the watch's stream: the unknown agent's error arrives there."""

    async def probe_in_daemon() -> ProbeResult:
        server = ServerConfig("local", opencode_server.url, "opencode", opencode_server.password)
        config = Config(servers=(server,), listen_port=0, probe_interval=60.0)
        transport = _CountingTransport()
        daemon = Daemon(config, transport=transport, probe_spec=ProbeSpec(agent="no-such-agent"))
        assert daemon.prober is not None
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            with anyio.fail_after(30):
                while ("local", ProbeShape.CURRENT) not in daemon.prober.latest:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert daemon.probe_sessions["local"].listeners == []
        # Only the watch's event stream, opened once per connection attempt (a loaded machine
        # can make it reconnect); the probe opened none of its own.
        watch_opens = 1 + daemon.watches[0].status.reconnects
        assert transport.paths.count("/global/event") == watch_opens
        return daemon.prober.latest[("local", ProbeShape.CURRENT)]

    result = anyio.run(probe_in_daemon)
    assert result.failed_step is Step.STORED
    assert result.reason is not None
    assert 'session.error UnknownError: Agent not found: "no-such-agent"' in result.reason


class _CountingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, noting the path of every request."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
