"""Fixtures for end-to-end tests: fake LLM, a real opencode server, webhook sink, daemons."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.conftest import MEASUREMENTS_ENV

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


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """A fresh fake LLM per test, so request counts belong to that test alone."""
    with FakeLLM() as llm:
        yield llm


@pytest.fixture
def opencode_server(
    fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenCodeServer]:
    """A started, warmed-up, isolated opencode server wired to fake_llm; stopped at teardown."""
    server = OpenCodeServer(tmp_path_factory.mktemp("opencode"), fake_llm.base_url)
    try:
        server.start()
        server.warm_up()
        yield server
    finally:
        server.close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1 collecting JSON POST bodies."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def daemon_factory() -> Iterator[DaemonFactory]:
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
