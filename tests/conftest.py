"""Shared helpers: load the reference captures and replay them through a tracker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio

from watchdog.replay import Recorded, read_sse, replay
from watchdog.tracker import Timeouts, Tracker
from watchdog.transitions import Transition

FIXTURES = Path(__file__).parent / "fixtures" / "opencode"
VERSIONS = ("1.18.33", "1.15.13")


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


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")
