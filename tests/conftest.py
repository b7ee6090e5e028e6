"""Shared helpers: load the reference captures and replay them through a tracker."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, settings

from watchdog.app.replay import Recorded, read_sse, replay
from watchdog.core.settings import Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Transition

FIXTURES = Path(__file__).parent / "fixtures" / "opencode"
VERSIONS = ("1.18.33", "1.15.13")
# What the end-to-end runs measured (e.g. how late after its deadline a stall was reported),
# printed at the end of the run so CI logs carry the numbers. Tests may run in pytest-xdist
# workers, so each appends to a file the controller names and reads back; these hooks live here
# because only the controller's initial conftest sees the start and the end of the run.
MEASUREMENTS_ENV = "OPENCODE_WATCHDOG_E2E_MEASUREMENTS"
# Where an end-to-end test that failed leaves its processes' whole logs (tests/e2e/conftest.py);
# emptied at the start of each run, so it holds the last run's failures only.
TEST_LOGS = Path(__file__).resolve().parents[1] / "test-logs"

# Hypothesis profiles (`HYPOTHESIS_PROFILE=NAME` or `--hypothesis-profile=NAME`). None has a
# deadline or a too-slow health check: both measure this machine's speed, and a loaded 2-core
# machine runs an example many times slower than an idle one, which says nothing about the code.
#   default  a developer's run: Hypothesis's own example counts, its database in .hypothesis/
#   ci       what scripts/test.sh runs: no database (a clean clone has none to replay), and a
#            failure prints the blob that reproduces it (`@reproduce_failure`)
#   long     a search before a release or after a change to the core: 20 times the examples
_QUIET = [HealthCheck.too_slow]
settings.register_profile("default", deadline=None, suppress_health_check=_QUIET)
settings.register_profile(
    "ci", deadline=None, suppress_health_check=_QUIET, database=None, print_blob=True
)
settings.register_profile(
    "long", deadline=None, suppress_health_check=_QUIET, max_examples=2000, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def capture(version: str, scenario: str, *, stream: str = "event") -> list[Recorded]:
    """The decoded events of one reference capture, with their recorded times."""
    path = FIXTURES / version / f"{scenario}.{stream}.sse"
    with path.open(encoding="utf-8") as lines:
        return list(read_sse(lines, directory_scoped=stream == "event"))


def run(
    version: str,
    scenario: str,
    timeouts: Timeouts | None = None,
    *,
    linger: float = 0.0,
    stream: str = "event",
) -> tuple[Tracker, list[Transition]]:
    """Replay a capture through a fresh tracker; ``linger`` keeps the clock going afterwards."""
    recording = capture(version, scenario, stream=stream)
    tracker = Tracker("test", timeouts or Timeouts())
    happened = replay(tracker, recording, until=recording[-1].at + linger)
    return tracker, [t for _, t in happened]


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds.

    The in-process tests' timeouts are fractions of a second; the wait is only spent when the
    thing never comes, so it is long enough for a loaded machine to get there."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


def pytest_configure(config: pytest.Config) -> None:
    """The controller picks the measurements file; xdist workers inherit it from the environment."""
    if MEASUREMENTS_ENV not in os.environ:
        handle, path = tempfile.mkstemp(prefix="opencode-watchdog-e2e-", suffix=".jsonl")
        os.close(handle)
        os.environ[MEASUREMENTS_ENV] = path
        shutil.rmtree(TEST_LOGS, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the end-to-end tests measured."""
    if hasattr(terminalreporter.config, "workerinput"):
        return  # an xdist worker: the controller prints
    kept = sorted(TEST_LOGS.iterdir()) if TEST_LOGS.is_dir() else []
    if kept:
        terminalreporter.section("logs of failed end-to-end tests")
        for folder in kept:
            terminalreporter.write_line(str(folder))
    path = Path(os.environ.get(MEASUREMENTS_ENV, ""))
    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    path.unlink()
    if not rows:
        return
    terminalreporter.section("end-to-end measurements")
    for row in rows:
        terminalreporter.write_line(f"{row['what']}: {row['value']:.3f}  ({row['test']})")
