"""End-to-end test processes: a real `opencode serve`, the daemon, a webhook sink, helpers."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
# How long a wait for something that should happen at once (a reply, a log line, a metric) may
# last before it fails. Generous, because it is only spent when something is wrong, and a loaded
# 2-core machine answers many times slower than an idle one. A wait for a daemon timeout to pass
# is longer than that timeout: Pace.beyond() gives it.
PATIENCE = 120.0
# Past this, a warm reply says the machine is too slow for tests whose stall timeouts are
# derived from it (they would take minutes each, and their margins would mean little).
WARM_REPLY_CEILING = 20.0
OPENCODE_VERSION = "1.18.33"
DEFAULT_BINARY = REPO_ROOT / ".cache/opencode/node_modules/opencode-linux-x64/bin/opencode"
SERVER_USERNAME = "opencode"

# Keep the server from reaching the internet (and from taking time doing so). Without these a
# fresh HOME makes it fetch models.dev and npm-install @opencode-ai/plugin into its config dir
# in the background; pointing npm at a closed loopback port makes that install fail at once.
OFFLINE_ENV = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "npm_config_registry": "http://127.0.0.1:9/",
    # Bun honours proxy variables; the fake LLM must be reached directly.
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "NO_COLOR": "1",
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll predicate until it returns a truthy value and return it; AssertionError after timeout.

    Exceptions from httpx (server restarting, connection refused) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except httpx.HTTPError as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout}s waiting for {what}"
            if last_error is not None:
                message += f"\nlast error: {last_error!r}"
            if details is not None:
                message += "\n" + details()
            raise AssertionError(message)
        time.sleep(interval)


class Pace:
    """The one place a test's daemon timeouts and its waits for them come from.

    Both derive from what warm_up() measured on this server: a stall timeout is a multiple of the
    warm reply (short enough for a test, long enough for this machine's replies, and never
    shorter than the cold first reply, the slowest moment seen), and a wait for a timeout to pass
    is that timeout plus PATIENCE, so it never ends before the thing it waits for is due. A warm
    reply slower than WARM_REPLY_CEILING fails the test, saying the machine is too slow.
    """

    def __init__(
        self, warm_reply: float, cold_reply: float = 0.0, ceiling: float = WARM_REPLY_CEILING
    ) -> None:
        if warm_reply > ceiling:
            raise AssertionError(
                f"the server took {warm_reply:.1f} s to answer a warm prompt (ceiling "
                f"{ceiling:.0f} s); this machine is too slow for this test"
            )
        self.warm_reply = warm_reply
        self.cold_reply = cold_reply

    def stall_timeout(self, floor: float = 5.0, factor: float = 6.0) -> float:
        """A stall timeout short enough for a test, long enough for this server's replies."""
        return round(max(floor, factor * self.warm_reply, self.cold_reply), 1)

    @staticmethod
    def beyond(*timeouts: float) -> float:
        """How long to wait for what is due after these daemon timeouts: their sum + PATIENCE."""
        return sum(timeouts) + PATIENCE

    def __repr__(self) -> str:
        return f"Pace(warm_reply={self.warm_reply:.2f}, cold_reply={self.cold_reply:.2f})"


def opencode_binary() -> Path:
    """Path of the pinned opencode binary; raises (never skips) when it is missing."""
    configured = os.environ.get("OPENCODE_BIN")
    path = Path(configured) if configured else DEFAULT_BINARY
    if not (path.is_file() and os.access(path, os.X_OK)):
        source = "OPENCODE_BIN" if configured else "the default location"
        raise RuntimeError(
            f"opencode binary not found at {path} ({source}); "
            f"run scripts/install-opencode.sh to install opencode {OPENCODE_VERSION}"
        )
    return path


_ID_LOCK = threading.Lock()
_id_state = {"ms": 0, "counter": 0}
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def opencode_id(prefix: str) -> str:
    """An ascending id in opencode's own format, e.g. msg_ + 12 hex digits + 14 base62 chars."""
    with _ID_LOCK:
        ms = int(time.time() * 1000)
        if ms != _id_state["ms"]:
            _id_state["ms"], _id_state["counter"] = ms, 0
        _id_state["counter"] += 1
        value = (ms * 4096 + _id_state["counter"]) % 2**48
    suffix = "".join(secrets.choice(_BASE62) for _ in range(14))
    return f"{prefix}_{value:012x}{suffix}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _terminate(proc: subprocess.Popen[Any], grace: float) -> int:
    """SIGTERM, then SIGKILL after grace seconds; signals only this one process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


class OpenCodeServer:
    """One isolated `opencode serve` on 127.0.0.1 with a REST client for it."""

    def __init__(
        self,
        workdir: Path,
        llm_base_url: str,
        port: int | None = None,
        password: str | None = None,
        binary: Path | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        ready_timeout: float = PATIENCE,
    ) -> None:
        self.workdir = workdir
        self.home = workdir / "home"
        self.project_dir = workdir / "project"
        self.log_path = workdir / "server.log"
        self.llm_base_url = llm_base_url
        self.port = port if port is not None else free_port()
        self.password = password if password is not None else secrets.token_hex(12)
        self.binary = binary if binary is not None else opencode_binary()
        self.ready_timeout = ready_timeout
        self.config: dict[str, Any] = {
            "$schema": "https://opencode.ai/config.json",
            "model": "fake/fake-1",
            "permission": {"bash": "ask"},
            "provider": {
                "fake": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Fake",
                    "options": {"baseURL": llm_base_url, "apiKey": "x"},
                    "models": {"fake-1": {"name": "Fake 1"}},
                }
            },
            **(config_overrides or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_message_id: str | None = None
        self.startup_seconds: list[float] = []
        self.cold_reply_seconds: float | None = None
        self.warm_reply_seconds: float | None = None
        self._log_file: IO[bytes] | None = None
        # trust_env=False: a developer's HTTP(S)_PROXY must not capture loopback traffic.
        self.client = httpx.Client(
            base_url=self.url,
            auth=(SERVER_USERNAME, self.password),
            timeout=10.0,
            trust_env=False,
        )

    # -- process control ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Pid of the running server process, if any."""
        return self.proc.pid if self.proc is not None else None

    def env(self) -> dict[str, str]:
        """Environment the server runs with: isolated HOME/XDG dirs, offline, password set."""
        # Inherited OPENCODE_* settings (e.g. from a developer's own opencode) would leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE_")}
        env.update(OFFLINE_ENV)
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / "config"),
            XDG_DATA_HOME=str(self.home / "data"),
            XDG_CACHE_HOME=str(self.home / "cache"),
            XDG_STATE_HOME=str(self.home / "state"),
            OPENCODE_SERVER_PASSWORD=self.password,
        )
        return env

    def daemon_env(self) -> dict[str, str]:
        """Environment entries the daemon needs to talk to this server."""
        return {"OPENCODE_SERVER_PASSWORD": self.password}

    def server_arg(self, name: str = "local") -> str:
        """Value for the daemon's --server NAME=URL option."""
        return f"{name}={self.url}"

    def start(self) -> OpenCodeServer:
        """Start the server and wait (bounded) until its REST API answers."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("opencode server already running")
        for sub in ("config", "data", "cache", "state"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.project_dir.mkdir(parents=True, exist_ok=True)
        (self.project_dir / "opencode.json").write_text(json.dumps(self.config, indent=2))
        if self._log_file is None:
            self._log_file = self.log_path.open("ab")
        self._log_file.write(f"\n==== harness: starting on port {self.port}\n".encode())
        self._log_file.flush()
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--print-logs",
            ],
            cwd=self.project_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own process group: a Ctrl-C meant for pytest must not reach the server directly.
            start_new_session=True,
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds.append(time.monotonic() - started)
        return self

    def warm_up(self, timeout: float = PATIENCE) -> float:
        """Send two prompts and wait for their replies; returns (and keeps) the second's time.

        A cold server's first reply takes seconds (plugin loading; more on a busy machine) and is
        kept as cold_reply_seconds; the second, in a session of its own like a test's, is what
        tests budget for (warm_reply_seconds, the figure Pace derives timeouts from).
        """
        started = time.monotonic()
        session = self.create_session()
        self.wait_for_reply(session, self.send_prompt(session, "WARMUP"), timeout=timeout)
        self.cold_reply_seconds = time.monotonic() - started
        return self.measure_warm_reply(timeout)

    def measure_warm_reply(self, timeout: float = PATIENCE) -> float:
        """One prompt in a new session, timed to its completed reply: the warm_reply_seconds."""
        started = time.monotonic()
        session = self.create_session()
        self.wait_for_reply(session, self.send_prompt(session, "WARMUP"), timeout=timeout)
        self.warm_reply_seconds = time.monotonic() - started
        return self.warm_reply_seconds

    def clean(self, timeout: float = PATIENCE) -> None:
        """Leave the server as a fresh one looks to a daemon: no session, nothing running.

        Rejects pending permissions, aborts busy sessions and deletes every session of the
        project directory, then waits (bounded) until /session/status is empty. For a server
        shared by the tests of one worker; tests that use other directories need their own.
        """
        for request in self.permissions():
            self.reply_permission(str(request["id"]), "reject")
        for session_id in self.session_status():
            self.abort(session_id)
        for session in self.sessions():
            self._check(self.client.delete(f"/session/{session['id']}"))
        self.wait_until(
            lambda: (not self.session_status() and not self.sessions()) or None,
            timeout,
            "the shared server to be idle with no session",
        )

    @property
    def pace(self) -> Pace:
        """Timeouts and waits derived from this server's warm-up reply (warm_up() first)."""
        if self.warm_reply_seconds is None or self.cold_reply_seconds is None:
            raise RuntimeError("no warm-up reply measured yet: call warm_up() first")
        return Pace(self.warm_reply_seconds, self.cold_reply_seconds)

    def quick_timeout(self, floor: float = 5.0, factor: float = 6.0) -> float:
        """A stall timeout short enough for a test, long enough for this server's warm replies."""
        return self.pace.stall_timeout(floor, factor)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll GET /session until it answers 200; fail early if the process exits."""
        limit = self.ready_timeout if timeout is None else timeout
        proc = self.proc
        if proc is None:
            raise RuntimeError("opencode server not started")

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"opencode serve exited with {proc.returncode} during startup\n"
                    + self.log_tail()
                )
            # A short timeout per try: during boot a connection may get no answer at all.
            return self.client.get("/session", timeout=2.0).status_code == 200

        wait_until(ready, limit, "opencode serve to answer GET /session", 0.1, self.log_tail)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the server, SIGKILL after grace seconds; returns its exit code."""
        if self.proc is None:
            return None
        return _terminate(self.proc, grace)

    def kill9(self) -> int | None:
        """SIGKILL the server (no chance to clean up) and reap it."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.proc.returncode

    def restart(self, kill: bool = False) -> OpenCodeServer:
        """Stop (SIGTERM, or SIGKILL when kill=True) and start again on the same port and dirs."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and release the client and log file."""
        self.stop()
        self.client.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> OpenCodeServer:
        if self.proc is None:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server log, for assertion messages."""
        return f"--- opencode server log tail ({self.log_path}) ---\n{_tail(self.log_path, lines)}"

    # -- REST -----------------------------------------------------------------------------

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise AssertionError(
                f"{response.request.method} {response.request.url} -> {response.status_code}: "
                f"{response.text[:500]}\n{self.log_tail(15)}"
            )
        return response

    @staticmethod
    def _params(directory: str | Path | None) -> dict[str, str]:
        return {"directory": str(directory)} if directory is not None else {}

    def create_session(self, directory: str | Path | None = None) -> str:
        """POST /session; returns the new session id."""
        r = self._check(self.client.post("/session", params=self._params(directory), json={}))
        return str(r.json()["id"])

    def prompt_async(
        self,
        session_id: str,
        text: str,
        message_id: str | None = None,
        part_id: str | None = None,
        server_ids: bool = False,
        directory: str | Path | None = None,
    ) -> int:
        """POST /session/{id}/prompt_async; returns the status code (204 = parsed, not answered).

        Ids default to fresh client-made ones; server_ids=True omits them so the server picks.
        """
        part: dict[str, Any] = {"type": "text", "text": text}
        body: dict[str, Any] = {"parts": [part]}
        if not server_ids:
            body["messageID"] = message_id or opencode_id("msg")
            part["id"] = part_id or opencode_id("prt")
        self.last_message_id = body.get("messageID")
        r = self.client.post(
            f"/session/{session_id}/prompt_async", params=self._params(directory), json=body
        )
        return r.status_code

    def send_prompt(
        self,
        session_id: str,
        text: str,
        message_id: str | None = None,
        directory: str | Path | None = None,
    ) -> str:
        """prompt_async with a client-made message id; asserts 204 and returns the id."""
        mid = message_id or opencode_id("msg")
        status = self.prompt_async(session_id, text, message_id=mid, directory=directory)
        assert status == 204, f"prompt_async returned {status}\n{self.log_tail(15)}"
        return mid

    def abort(self, session_id: str) -> bool:
        """POST /session/{id}/abort; returns the server's boolean answer."""
        r = self._check(self.client.post(f"/session/{session_id}/abort"))
        return bool(r.json())

    def session_status(self, directory: str | Path | None = None) -> dict[str, Any]:
        """GET /session/status: {sessionID: {type: busy|retry, ...}}; idle sessions are absent."""
        r = self._check(self.client.get("/session/status", params=self._params(directory)))
        data = r.json()
        assert isinstance(data, dict), data
        return data

    def sessions(self) -> list[dict[str, Any]]:
        """GET /session."""
        data = self._check(self.client.get("/session")).json()
        assert isinstance(data, list), data
        return data

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        """GET /session/{id}/message: [{info, parts}] oldest first."""
        data = self._check(self.client.get(f"/session/{session_id}/message")).json()
        assert isinstance(data, list), data
        return data

    def permissions(self) -> list[dict[str, Any]]:
        """GET /permission: pending permission requests."""
        data = self._check(self.client.get("/permission")).json()
        assert isinstance(data, list), data
        return data

    def reply_permission(self, request_id: str, reply: str = "once") -> bool:
        """POST /permission/{id}/reply with once|always|reject."""
        r = self._check(self.client.post(f"/permission/{request_id}/reply", json={"reply": reply}))
        return bool(r.json())

    def read_events(
        self, path: str = "/global/event", count: int = 1, timeout: float = PATIENCE
    ) -> list[dict[str, Any]]:
        """Open an SSE endpoint and return its first `count` JSON events (bounded by timeout)."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        # The read timeout bounds each blocking read; the deadline bounds the whole call.
        limits = httpx.Timeout(min(timeout, 5.0))
        try:
            with self.client.stream("GET", path, timeout=limits) as response:
                self._check(response)
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        events.append(json.loads(line[5:].strip()))
                        if len(events) >= count:
                            break
                    if time.monotonic() >= deadline:
                        break
        except httpx.ReadTimeout:
            # No bytes (not even headers) for a while: return what arrived, the caller asserts.
            pass
        return events

    # -- waiting --------------------------------------------------------------------------

    def wait_until(
        self, predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
    ) -> T:
        """Module wait_until with this server's log tail in the failure message."""
        return wait_until(predicate, timeout, what, interval, self.log_tail)

    def assistant_replies(self, session_id: str, message_id: str) -> list[dict[str, Any]]:
        """Assistant message infos whose parentID is message_id, oldest first."""
        return [
            m["info"]
            for m in self.messages(session_id)
            if m["info"].get("role") == "assistant" and m["info"].get("parentID") == message_id
        ]

    def wait_for_reply(
        self, session_id: str, message_id: str, timeout: float = PATIENCE
    ) -> dict[str, Any]:
        """Wait for a completed assistant reply to message_id that is not a tool-call step."""

        def done() -> dict[str, Any] | None:
            for info in self.assistant_replies(session_id, message_id)[::-1]:
                completed = bool(info.get("time", {}).get("completed"))
                if completed and info.get("finish") != "tool-calls":
                    return info
            return None

        return self.wait_until(done, timeout, f"a completed reply to {message_id} in {session_id}")

    def wait_for_status(
        self,
        session_id: str,
        status: str,
        timeout: float = PATIENCE,
        directory: str | Path | None = None,
    ) -> dict[str, Any]:
        """Wait until /session/status shows the session as busy/retry (or idle = absent)."""

        def matches() -> dict[str, Any] | None:
            entry = self.session_status(directory).get(session_id)
            if status == "idle":
                return {"type": "idle"} if entry is None else None
            return entry if entry is not None and entry.get("type") == status else None

        return self.wait_until(matches, timeout, f"session {session_id} status {status!r}")

    def wait_for_permission(self, session_id: str, timeout: float = PATIENCE) -> dict[str, Any]:
        """Wait until a permission request for the session is pending; returns it."""

        def pending() -> dict[str, Any] | None:
            found = [p for p in self.permissions() if p.get("sessionID") == session_id]
            return found[0] if found else None

        return self.wait_until(pending, timeout, f"a pending permission in {session_id}")


class _WebhookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _WebhookServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        status = self.server.next_status()
        self.server.record(
            WebhookRequest(time.time(), self.path, dict(self.headers.items()), raw, body, status)
        )
        reply = b'{"ok":true}' if status < 300 else b'{"error":"injected failure"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class WebhookRequest:
    """One POST the webhook receiver got, and the status it answered with."""

    def __init__(
        self,
        at: float,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        body: Any,
        status: int,
    ) -> None:
        self.at, self.path, self.headers = at, path, headers
        self.raw, self.body, self.status = raw, body, status

    def __repr__(self) -> str:
        return f"WebhookRequest(status={self.status}, body={self.raw[:300]!r})"


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.lock = threading.Lock()
        self.requests: list[WebhookRequest] = []
        self.failures_left = 0
        self.failure_status = 500

    def next_status(self) -> int:
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return self.failure_status
            return 200

    def record(self, request: WebhookRequest) -> None:
        with self.lock:
            self.requests.append(request)


class WebhookReceiver:
    """Collects JSON POST bodies on 127.0.0.1 (free port); can fail the first N requests."""

    def __init__(self, fail_first: int = 0, failure_status: int = 500) -> None:
        self._server = _WebhookServer()
        self._server.failures_left = fail_first
        self._server.failure_status = failure_status
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """URL to give the daemon's --webhook option."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next `count` requests with `status` (to exercise retries)."""
        with self._server.lock:
            self._server.failures_left = count
            self._server.failure_status = status

    @property
    def requests(self) -> list[WebhookRequest]:
        """Every request received, failed ones included, oldest first."""
        with self._server.lock:
            return list(self._server.requests)

    @property
    def bodies(self) -> list[Any]:
        """Parsed JSON bodies of the requests that were answered 2xx, oldest first."""
        return [r.body for r in self.requests if r.status < 300]

    def wait_for(
        self,
        predicate: Callable[[Any], bool],
        timeout: float = PATIENCE,
        accepted_only: bool = True,
    ) -> Any:
        """First body matching predicate, of an accepted (2xx) request unless told otherwise."""

        def find() -> list[Any] | None:
            for r in self.requests:
                if (r.status < 300 or not accepted_only) and predicate(r.body):
                    return [r.body]
            return None

        found = wait_until(
            find,
            timeout,
            "a matching webhook POST",
            0.05,
            lambda: f"webhook requests so far: {self.requests!r}",
        )
        return found[0]

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _listen_from_args(args: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--listen" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--listen="):
            return arg.split("=", 1)[1]
    return None


class DaemonProcess:
    """The real daemon (`python -m watchdog run ...`) as a subprocess with captured output."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        listen: str | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.args = list(args)
        self.command = (
            list(command)
            if command is not None
            else [
                sys.executable,
                "-m",
                "watchdog",
                "run",
            ]
        )
        self.listen = listen or _listen_from_args(self.args)
        self._lock = threading.Lock()
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._records: list[dict[str, Any]] = []
        # Unbuffered so every log line reaches the reader thread when it is written.
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [*self.command, *self.args],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.http = httpx.Client(timeout=5.0, trust_env=False)

    def _read(self, stream: IO[bytes], is_stdout: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            record: Any = None
            if is_stdout:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
            with self._lock:
                (self.stdout_lines if is_stdout else self.stderr_lines).append(line)
                if isinstance(record, dict):
                    self._records.append(record)
        stream.close()

    @property
    def pid(self) -> int:
        """Pid of the daemon process."""
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit code, or None while running."""
        return self.proc.poll()

    @property
    def base_url(self) -> str:
        """http://LISTEN of the metrics endpoint."""
        if self.listen is None:
            raise RuntimeError("daemon started without --listen; metrics address unknown")
        return f"http://{self.listen}"

    def output_tail(self, lines: int = 30) -> str:
        """Last stdout and stderr lines, for assertion messages."""
        with self._lock:
            out, err = self.stdout_lines[-lines:], self.stderr_lines[-lines:]
        return (
            f"--- daemon (rc={self.proc.poll()}) stdout tail ---\n"
            + "\n".join(out)
            + "\n--- daemon stderr tail ---\n"
            + "\n".join(err)
        )

    def get(self, path: str) -> httpx.Response:
        """GET a path on the daemon's listen address."""
        return self.http.get(self.base_url + path)

    def wait_listening(self, timeout: float = PATIENCE) -> None:
        """Wait until /metrics answers 200; fail early if the daemon exits."""

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited during startup\n" + self.output_tail())
            return self.get("/metrics").status_code == 200

        wait_until(up, timeout, "the daemon's /metrics to answer", 0.1, self.output_tail)

    def metrics_text(self) -> str:
        """Body of GET /metrics (raises on a non-2xx answer)."""
        r = self.get("/metrics")
        r.raise_for_status()
        return r.text

    def healthz(self) -> httpx.Response:
        """GET /healthz."""
        return self.get("/healthz")

    def status(self) -> Any:
        """GET /status parsed as JSON."""
        r = self.get("/status")
        r.raise_for_status()
        return r.json()

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """Value of a metric sample, or None if absent.

        `name` may be the family name of a counter (its sample is `<name>_total`) or the exact
        sample name. `labels` must match those keys only (others are ignored); when several
        samples match, their sum is returned.
        """
        wanted = dict(labels or {})
        total: float | None = None
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name not in (name, f"{name}_total"):
                    continue
                if all(s.labels.get(k) == v for k, v in wanted.items()):
                    total = (total or 0.0) + float(s.value)
        return total

    def wait_for_sample(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        predicate: Callable[[float], bool] = lambda v: v >= 1,
        timeout: float = PATIENCE,
    ) -> float:
        """Wait until the sample exists and satisfies predicate; returns its value."""
        last: list[float | None] = [None]

        def check() -> list[float] | None:
            value = self.sample(name, labels)
            last[0] = value
            return [value] if value is not None and predicate(value) else None

        def details() -> str:
            return f"last value of {name}{dict(labels or {})}: {last[0]}\n" + self.output_tail()

        return wait_until(check, timeout, f"metric {name}{dict(labels or {})}", 0.2, details)[0]

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        """JSON log records from stdout, optionally only those whose "event" equals `event`."""
        with self._lock:
            records = list(self._records)
        return [r for r in records if event is None or r.get("event") == event]

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = PATIENCE
    ) -> dict[str, Any]:
        """Return the first JSON log record matching predicate, polling up to timeout."""

        def find() -> list[dict[str, Any]] | None:
            for record in self.logs():
                if predicate(record):
                    return [record]
            return None

        return wait_until(find, timeout, "a matching daemon log record", 0.05, self.output_tail)[0]

    def send_signal(self, sig: int) -> None:
        """Send a signal to the daemon process (e.g. SIGHUP)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, wait up to grace seconds, then SIGKILL; returns the exit code."""
        rc = _terminate(self.proc, grace)
        for reader in self._readers:
            reader.join(timeout=5)
        self.http.close()
        return rc

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
