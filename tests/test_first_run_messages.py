"""First-run truths and messages a person can act on: the page URL at start, replay of a fresh
recording, a 401 when no password was given, a refused connection worded alike by `probe` and
`run`, and unknown config keys with the closest known one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from tests.conftest import FIXTURES, wait_for
from tests.test_daemon import SSE, hold_open
from watchdog.app.config import Config
from watchdog.app.daemon import Daemon, page_url
from watchdog.app.replay import with_rotated
from watchdog.core.settings import ServerConfig
from watchdog.io.probe import Probe, ProbeSpec
from watchdog.io.source import AuthError, EventSource
from watchdog.io.webconfig import WebConfig

DEMO = Path(__file__).resolve().parent.parent / "watchdog" / "app" / "demo_data"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_run_logs_its_page_url_at_start() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=hold_open([]))

    config = Config(servers=(ServerConfig("oc", "http://oc.test"),), listen_port=0)
    daemon = Daemon(config, transport=httpx.MockTransport(handler))
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            port = await tg.start(daemon.run)
            await wait_for(lambda: any(e["event"] == "daemon.started" for e in logs), "start")
            tg.cancel_scope.cancel()
    [started] = [e for e in logs if e["event"] == "daemon.started"]
    assert started["page"] == f"http://127.0.0.1:{port}/"


def test_the_page_url_is_one_a_browser_here_can_open() -> None:
    assert page_url(Config(servers=(), listen_host="0.0.0.0"), 9464) == "http://127.0.0.1:9464/"
    assert page_url(Config(servers=(), listen_host="::1"), 9464) == "http://[::1]:9464/"
    tls = WebConfig(cert_file="c.crt", key_file="c.key")
    assert page_url(Config(servers=(), listen_host="10.0.0.5", web=tls), 1) == "https://10.0.0.5:1/"


def test_replay_of_a_fresh_recording_as_the_readme_says(tmp_path: Path) -> None:
    """`replay events.jsonl` works before any rotation and reads the rotated parts after one."""
    shutil.copy(DEMO / "demo.record.jsonl", tmp_path / "events.jsonl")
    fresh = cli("replay", "events.jsonl", "--sweep", "30s,60s", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.startswith("replayed ")
    (tmp_path / "events.jsonl.1").write_text((tmp_path / "events.jsonl").read_text())
    (tmp_path / "events.jsonl").write_text("")
    rotated = cli("replay", "events.jsonl", "--sweep", "30s,60s", cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout == fresh.stdout


def test_rotated_parts_are_read_once_oldest_first(tmp_path: Path) -> None:
    base = tmp_path / "e.jsonl"
    for name in ("e.jsonl", "e.jsonl.1", "e.jsonl.2"):
        (tmp_path / name).write_text("")
    assert with_rotated([str(base)]) == [f"{base}.2", f"{base}.1", str(base)]
    assert with_rotated([f"{base}.1", str(base)]) == [f"{base}.1", f"{base}.2", str(base)]
    capture = FIXTURES / "1.18.33" / "normal.event.sse"
    assert with_rotated([str(capture)]) == [str(capture)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("auth", "words"),
    [
        (None, "answered 401 (the server asks for a password): no password was given"),
        (httpx.BasicAuth("opencode", "wrong"), "answered 401: check the username and password"),
    ],
)
async def test_a_401_says_whether_a_password_was_given(
    auth: httpx.BasicAuth | None, words: str
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(401))
    async with httpx.AsyncClient(transport=transport, auth=auth) as client:
        source = EventSource(client, "http://oc.test")
        with pytest.raises(AuthError) as caught:
            async with source.connect() as batches:
                async for _ in batches:
                    pass
    assert words in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_probe_words_a_refused_connection_as_run_does() -> None:
    """`run` logs `http://127.0.0.1:PORT/global/event: connection refused`; `probe` the same."""
    port = refused_port()
    done = cli("probe", "--server", f"http://127.0.0.1:{port}")
    assert done.returncode == 1
    assert f"GET http://127.0.0.1:{port}/session: connection refused" in done.stderr
    assert "ConnectError" not in done.stderr


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("auth", "words"),
    [
        (None, "answered 401 (the server asks for a password): no password was given"),
        (
            httpx.BasicAuth("opencode", "wrong"),
            "answered 401: check the username and password",
        ),
    ],
)
async def test_probe_says_whether_a_password_was_given(
    auth: httpx.BasicAuth | None, words: str
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(401))
    async with httpx.AsyncClient(transport=transport, auth=auth) as client:
        result = await Probe(client, "http://oc.test", "oc").run(ProbeSpec())
    assert not result.ok
    assert result.reason is not None
    assert words in result.reason
