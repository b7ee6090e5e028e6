"""Issue 9, the endpoint off loopback: TLS and basic auth (real handshakes), and a full descriptor
table that sheds connections instead of killing the daemon."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import anyio
import bcrypt
import httpx
import pytest
import trustme
from structlog.testing import capture_logs

from watchdog.app.config import Config, RawOptions, load
from watchdog.app.daemon import Daemon
from watchdog.core.settings import ConfigError, ServerConfig
from watchdog.io.webconfig import BasicAuth, read_web_config

PASSWORD = "correct horse battery staple"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def hashed() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def web_config(tmp_path: Path, ca: trustme.CA, hashed: str) -> Path:
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    path = tmp_path / "web.toml"
    path.write_text(
        "[tls_server_config]\n"
        f'cert_file = "{tmp_path / "tls.crt"}"\n'
        f'key_file = "{tmp_path / "tls.key"}"\n\n'
        "[basic_auth_users]\n"
        f'prometheus = "{hashed}"\n'
    )
    return path


@pytest.mark.anyio
async def test_tls_and_basic_auth_guard_every_path_but_healthz(tmp_path: Path, hashed: str) -> None:
    """Over a real TLS handshake: /metrics and /status need the user's password (401 with a
    Basic challenge otherwise); /healthz answers without; plain HTTP gets nothing."""
    ca = trustme.CA()
    config = Config(
        servers=(ServerConfig("oc", "http://127.0.0.1:9"),),
        listen_port=0,
        web=read_web_config("--web-config", str(web_config(tmp_path, ca, hashed))),
    )
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with anyio.create_task_group() as tg:
        port = await tg.start(Daemon(config).run)
        base = f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(verify=trusted, base_url=base) as client:
            anonymous = await client.get("/metrics")
            wrong = await client.get("/status", auth=("prometheus", "guess"))
            stranger = await client.get("/status", auth=("mallory", PASSWORD))
            metrics = await client.get("/metrics", auth=("prometheus", PASSWORD))
            again = await client.get("/metrics", auth=("prometheus", PASSWORD))
            status = await client.get("/status", auth=("prometheus", PASSWORD))
            health = await client.get("/healthz")
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{port}/metrics")
        async with httpx.AsyncClient() as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(f"{base}/healthz")
        tg.cancel_scope.cancel()
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith('Basic realm="opencode-watchdog"')
    assert wrong.status_code == stranger.status_code == 401
    assert metrics.status_code == again.status_code == 200
    assert metrics.text.startswith("# HELP")
    assert status.json()["servers"][0]["server"] == "oc"
    assert health.status_code == 503  # open, and honest: the server is down


@pytest.mark.anyio
async def test_basic_auth_rejects_malformed_headers() -> None:
    """Garbage in the Authorization header is a plain no, never an exception."""
    auth = BasicAuth({"u": bcrypt.hashpw(b"p", bcrypt.gensalt(rounds=4)).decode()})
    for header in [None, "", "Bearer x", "Basic !!!", "Basic dTpw=x", "Basic dQ=="]:
        assert await auth.check(header) is False
    assert await auth.check("Basic dTpw") is True  # u:p


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[basic_auth_users]\nu = "plaintext"\n', "expected a bcrypt hash"),
        ('[tls_server_config]\ncert_file = "/nonexistent.crt"\n', "cert_file and key_file"),
        (
            '[tls_server_config]\ncert_file = "/nonexistent.crt"\nkey_file = "/nonexistent.key"\n',
            "cannot read /nonexistent.crt",
        ),
        ("[tls]\n", "unknown key"),
    ],
)
def test_a_bad_web_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    """Plain-text passwords, missing or unreadable certificates and unknown keys stop start-up."""
    path = tmp_path / "web.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(RawOptions(web_config=str(path)), {})


def test_web_config_can_live_in_the_main_config(tmp_path: Path, hashed: str) -> None:
    """A `[web]` table in the TOML takes the same keys as the separate file."""
    path = tmp_path / "config.toml"
    path.write_text(f'[web.basic_auth_users]\nprometheus = "{hashed}"\n')
    config = load(RawOptions(config=str(path)), {})
    assert config.web is not None
    assert list(config.web.users) == ["prometheus"]
    assert not config.web.tls


@pytest.mark.anyio
async def test_listening_beyond_loopback_without_tls_or_auth_is_warned_about() -> None:
    """`--listen 0.0.0.0:…` with no web config: one warning naming what is missing."""
    config = Config(
        servers=(ServerConfig("oc", "http://127.0.0.1:9"),), listen_host="0.0.0.0", listen_port=0
    )
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(Daemon(config).run)
            tg.cancel_scope.cancel()
    [exposed] = [e for e in logs if e["event"] == "endpoint.exposed"]
    assert exposed["missing"] == ["TLS", "basic auth"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


UNDER_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
import anyio
from watchdog.app.config import RawOptions, load
from watchdog.core.settings import ConfigError
from watchdog.app.daemon import Daemon
from watchdog.app.logs import configure

async def main() -> None:
    config = load(RawOptions(servers=["http://127.0.0.1:9"], listen="127.0.0.1:" + sys.argv[1],
                             log_format="json"), {})
    daemon = Daemon(config)
    if sys.argv[2] == "uncapped":
        daemon.endpoint.connections.limit = 10_000  # let accept() itself hit EMFILE
    await daemon.run()

configure("json", "info", sys.stdout)
anyio.run(main)
"""


@pytest.mark.parametrize("mode", ["capped", "uncapped"])
def test_a_full_descriptor_table_sheds_idle_connections_and_keeps_serving(
    tmp_path: Path, mode: str
) -> None:
    """Under a 64-descriptor limit, 200 idle connections neither kill the daemon nor stop it from
    answering /metrics: at the connection cap (or on EMFILE) the oldest idle ones are shed."""
    port = free_port()
    log = (tmp_path / "daemon.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-c", UNDER_LIMIT, str(port), mode],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        answer = None
        while answer is None and time.monotonic() < deadline + 20:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3)
            except httpx.HTTPError:
                time.sleep(0.1)
        alive = proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
        proc.terminate()
        proc.wait(timeout=20)
    log.seek(0)
    output = log.read()
    assert alive, output[-2000:]
    assert answer is not None, output[-2000:]
    assert answer.status_code == 200
    if mode == "uncapped":
        assert "endpoint.out_of_descriptors" in output
