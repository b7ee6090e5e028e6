"""Issue 9, TLS and configuration: a private CA for servers, sink URLs checked, loose password files."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import trustme
from anyio.abc import ByteStream
from structlog.testing import capture_logs

from tests.conftest import wait_for
from tests.hostile import CONNECTED, HEARTBEAT, SSE_HEAD, Request, answer_json, hostile_server
from tests.test_daemon import FAST
from watchdog.app.config import Config, RawOptions, load
from watchdog.app.daemon import Daemon
from watchdog.core.settings import ConfigError, ServerConfig


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def opencode(request: Request, stream: ByteStream) -> None:
    """Enough of OpenCode for a stream to come up and reconcile to run."""
    if request.path == "/global/event":
        await stream.send(SSE_HEAD + CONNECTED)
        while True:
            await anyio.sleep(0.2)
            await stream.send(HEARTBEAT)
    await answer_json(stream, b"{}" if request.path == "/session/status" else b"[]")


@pytest.mark.anyio
async def test_a_server_behind_a_private_ca_is_watched_with_its_ca_file(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """Real TLS handshakes: with the server's `ca_file` the stream comes up and REST reconcile
    reads it; another server without it fails verification, named in its stream error."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with hostile_server(opencode, tls=server_context(ca)) as url:
        config = Config(
            servers=(
                ServerConfig("trusted", url, ca_file=str(bundle)),
                ServerConfig("untrusted", url),
            ),
            listen_port=0,
            timeouts=FAST,
        )
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                daemon = Daemon(config)
                await tg.start(daemon.run)
                await wait_for(
                    lambda: any(
                        e["event"] == "reconcile.done" and e["server"] == "trusted" for e in logs
                    ),
                    "reconcile over TLS",
                )
                await wait_for(
                    lambda: any(
                        e["event"] == "stream.down" and e["server"] == "untrusted" for e in logs
                    ),
                    "the untrusted server down",
                )
                tg.cancel_scope.cancel()
    assert daemon.watches[0].status.state.value == "up"
    down = next(e for e in logs if e["event"] == "stream.down" and e["server"] == "untrusted")
    assert "TLS verification failed" in down["error"]


def test_ca_file_flag_applies_to_every_server_and_per_server_wins(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """`--ca-file` is the default; a server's own `ca_file` in the TOML replaces it."""
    shared, own = tmp_path / "shared.pem", tmp_path / "own.pem"
    ca.cert_pem.write_to_path(str(shared))
    trustme.CA().cert_pem.write_to_path(str(own))
    file = tmp_path / "config.toml"
    file.write_text(
        '[[servers]]\nurl = "https://a.example:4096"\n\n'
        f'[[servers]]\nurl = "https://b.example:4096"\nca_file = "{own}"\n'
    )
    config = load(RawOptions(config=str(file), ca_file=str(shared)), {})
    assert [s.ca_file for s in config.servers] == [str(shared), str(own)]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read CA file"), ("not a certificate\n", "holds no PEM CA certificate")],
)
def test_a_bad_ca_file_is_one_clear_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    """A missing or non-PEM CA file names the option; verification is never silently off."""
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load(RawOptions(ca_file=str(path)), {})
    assert caught.value.option == "--ca-file"


@pytest.mark.parametrize(
    "url", ["http://hook.example:99999/", "http://hook.example:0/x", "https://h:port/"]
)
def test_a_bad_sink_url_is_one_line_and_exit_2(url: str) -> None:
    """`--webhook http://host:99999/` used to print a traceback and exit 1."""
    result = subprocess.run(
        [sys.executable, "-m", "watchdog", "run", "--webhook", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("opencode-watchdog: error: --webhook: bad port")
    assert "Traceback" not in result.stderr


def test_an_alertmanager_url_with_a_bad_port_is_refused_too() -> None:
    """The same check covers `--alertmanager`."""
    with pytest.raises(ConfigError, match="bad port") as caught:
        load(RawOptions(alertmanagers=["http://am:70000"]), {})
    assert caught.value.option == "--alertmanager"


@pytest.mark.anyio
async def test_a_password_file_others_can_read_is_warned_about_once(tmp_path: Path) -> None:
    """Mode 0644 on a password file: one warning at start-up (and none again on reload); 0600 none."""
    loose, tight = tmp_path / "loose", tmp_path / "tight"
    loose.write_text("pw\n")
    loose.chmod(0o644)
    tight.write_text("pw\n")
    tight.chmod(0o600)
    assert load(RawOptions(password_file=str(tight)), {}).warnings == ()
    config = load(RawOptions(password_file=str(loose), listen="127.0.0.1:0"), {})
    [warning] = config.warnings
    assert str(loose) in warning
    assert "pw" not in warning.replace(str(loose), "")
    async with hostile_server(opencode) as url:
        config = load(RawOptions(password_file=str(loose), listen="127.0.0.1:0", servers=[url]), {})
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                daemon = Daemon(config, reload=lambda: config)
                await tg.start(daemon.run)
                daemon.reload_config()
                tg.cancel_scope.cancel()
    assert [e["event"] for e in logs].count("config.warning") == 1
