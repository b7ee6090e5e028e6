"""Fixtures for end-to-end tests: fake LLM, a real opencode server, webhook sink, daemons."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from tests.conftest import MEASUREMENTS_ENV, TEST_LOGS

from .fakellm import FakeLLM
from .harness import DaemonProcess, OpenCodeServer, WebhookReceiver, free_port

DaemonFactory = Callable[..., DaemonProcess]
Measure = Callable[[str, float], None]

_E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e with `e2e` so `-m "not e2e"` deselects them."""
    for item in items:
        if _E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


OWN_SERVER = "own_server"

# A failed test's logs: each fixture that starts a process names what to keep, as a file name and
# a function that reads it at the end of the test (after the process stopped, so it is whole).
Keep = list[tuple[str, Callable[[], str]]]
_KEEP = pytest.StashKey[Keep]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report, for _failure_logs."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def keep(request: pytest.FixtureRequest, name: str, read: Callable[[], str]) -> None:
    """Have the test's log folder hold ``name`` (read at the end) if the test fails."""
    request.node.stash.setdefault(_KEEP, []).append((name, read))


@pytest.fixture(autouse=True)
def _failure_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed test leaves test-logs/<test>/: the failure and its processes' whole logs.

    Torn down after the test's other fixtures (it is set up first), so daemons have stopped and
    their output is complete.
    """
    yield
    reports = request.node.stash.get(_REPORTS, {})
    failed = [r for r in reports.values() if r.failed]
    if not failed:
        return
    folder = TEST_LOGS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")
    folder.mkdir(parents=True, exist_ok=True)
    failure = "\n\n".join(f"--- {r.when} ---\n{r.longreprtext}" for r in failed)
    (folder / "failure.txt").write_text(f"{request.node.nodeid}\n\n{failure}\n", "utf-8")
    for name, read in request.node.stash.get(_KEEP, []):
        try:
            text = read()
        except Exception as error:  # a log that cannot be read must not hide the others
            text = f"(could not read: {error!r})"
        (folder / name).write_text(text, "utf-8")
    print(f"logs of this failure: {folder}")


class _Shared:
    """The fake LLM and warmed opencode server the tests of one xdist worker share."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.llm: FakeLLM | None = None
        self.server: OpenCodeServer | None = None

    def get_llm(self) -> FakeLLM:
        if self.llm is None:
            self.llm = FakeLLM().start()
        return self.llm

    def quiesce(self) -> None:
        """Clean the shared server, if any (no session, nothing running); drop it if unusable.

        Before the fake LLM is reset: a reset releases the requests it holds (hung replies), and
        a session still alive retries them at once, so the next test would see them as its own.
        """
        server = self.server
        if server is None:
            return
        try:
            if server.proc is None or server.proc.poll() is not None:
                raise AssertionError("the shared opencode server is not running")
            server.clean()
        except (AssertionError, httpx.HTTPError):
            # Whatever the last test left, the next one gets a clean server.
            server.close()
            self.server = None

    def get_server(self) -> OpenCodeServer:
        """The shared server, cleaned for the next test; a new one if the last is unusable."""
        self.quiesce()
        server = self.server
        if server is not None:
            try:
                server.measure_warm_reply()  # this moment's pace, not the first test's
                server.clean()
            except (AssertionError, httpx.HTTPError):
                server.close()
                server = self.server = None
        if server is None:
            llm = self.get_llm()
            server = OpenCodeServer(self.workdir / f"opencode-{os.getpid()}", llm.base_url)
            try:
                server.start()
                server.warm_up()
                server.clean()
            except BaseException:
                server.close()
                raise
            self.server = server
        return server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.llm is not None:
            self.llm.stop()


@pytest.fixture(scope="session")
def _shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Shared]:
    shared = _Shared(tmp_path_factory.mktemp("shared"))
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def fake_llm(request: pytest.FixtureRequest, _shared: _Shared) -> Iterator[FakeLLM]:
    """The fake LLM, with no request seen yet: the worker's shared one, or (own_server) a new one."""
    if request.node.get_closest_marker(OWN_SERVER):
        with FakeLLM() as llm:
            keep(request, "fake-llm-requests.jsonl", lambda: _requests_seen(llm))
            yield llm
        return
    llm = _shared.get_llm()
    _shared.quiesce()
    llm.reset()
    seen: list[str] = []  # read before the reset below, which forgets them
    keep(request, "fake-llm-requests.jsonl", lambda: "".join(seen))
    yield llm
    seen.append(_requests_seen(llm))
    _shared.quiesce()
    llm.reset()


def _requests_seen(llm: FakeLLM) -> str:
    """What the fake LLM was asked during the test: time, mode, role of the last message."""
    rows = [
        {"at": r.at, "path": r.path, "mode": r.mode, "last_role": r.last_role, "stream": r.stream}
        for r in llm.requests
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def opencode_server(
    request: pytest.FixtureRequest,
    fake_llm: FakeLLM,
    _shared: _Shared,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OpenCodeServer]:
    """A started, warmed-up opencode server wired to fake_llm, with no session in it.

    One server per xdist worker is shared by its tests (each gets it cleaned: no session,
    nothing running, a fresh warm reply measured for Pace); a test marked own_server gets an
    isolated one, stopped at teardown.
    """
    if request.node.get_closest_marker(OWN_SERVER):
        server = OpenCodeServer(tmp_path_factory.mktemp("opencode"), fake_llm.base_url)
        keep(request, "opencode-server.log", lambda: _read_from(server.log_path, 0))
        try:
            server.start()
            server.warm_up()
            yield server
        finally:
            server.close()
        return
    server = _shared.get_server()
    start = server.log_path.stat().st_size if server.log_path.exists() else 0
    keep(request, "opencode-server.log", lambda: _read_from(server.log_path, start))
    yield server


def _read_from(path: Path, offset: int) -> str:
    """The text of ``path`` from byte ``offset`` on (a shared server's log since a test began)."""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


@pytest.fixture
def webhook(request: pytest.FixtureRequest) -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1 collecting JSON POST bodies."""
    with WebhookReceiver() as receiver:
        keep(
            request, "webhook.jsonl", lambda: "".join(json.dumps(b) + "\n" for b in receiver.bodies)
        )
        yield receiver


@pytest.fixture
def daemon_factory(request: pytest.FixtureRequest) -> Iterator[DaemonFactory]:
    """Start daemons with `factory(args, env=..., wait=True)`; all are stopped at teardown.

    Adds `--listen 127.0.0.1:<free port>` when args have no --listen, and by default waits
    until /metrics answers.
    """
    started: list[DaemonProcess] = []

    def factory(
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        command: Sequence[str] | None = None,
    ) -> DaemonProcess:
        argv = list(args)
        if not any(a == "--listen" or a.startswith("--listen=") for a in argv):
            argv += ["--listen", f"127.0.0.1:{free_port()}"]
        daemon = DaemonProcess(argv, env=env, command=command)
        started.append(daemon)
        name = f"daemon-{len(started)}"
        keep(request, f"{name}.stdout.log", lambda: "\n".join(daemon.stdout_lines) + "\n")
        keep(request, f"{name}.stderr.log", lambda: "\n".join(daemon.stderr_lines) + "\n")
        keep(request, f"{name}.args", lambda: "\n".join(daemon.args) + "\n")
        if wait:
            daemon.wait_listening()
        return daemon

    yield factory
    for daemon in reversed(started):
        daemon.stop()


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Measure:
    """Record a number for the end-of-run summary."""

    def record(what: str, value: float) -> None:
        line = json.dumps({"test": request.node.name, "what": what, "value": value})
        with Path(os.environ[MEASUREMENTS_ENV]).open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    return record
