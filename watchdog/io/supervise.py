"""Keeps a long-running task alive: an unexpected exception is logged, counted and restarted."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import structlog

from watchdog.io.backoff import Backoff

log = structlog.get_logger("watchdog.supervise")

# A task that ran this long before failing was healthy: its next failure starts backoff afresh.
HEALTHY_AFTER = 60.0


async def supervise(
    task: str,
    run: Callable[[], Awaitable[None]],
    *,
    on_crash: Callable[[], None],
    server: str | None = None,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> None:
    """Run ``run()`` until it returns; restart it with capped backoff whenever it raises.

    Only ``Exception`` is caught: cancellation (SIGTERM, a reload stopping a server) still ends
    the task at once. One server's task failing therefore never takes down the task group.
    """
    backoff = backoff or Backoff(base=1.0, cap=60.0)
    while True:
        started = time.monotonic()
        try:
            await run()
        except Exception:
            on_crash()
            if time.monotonic() - started >= HEALTHY_AFTER:
                backoff.reset()
            delay = backoff.next_delay()
            log.exception("task.crashed", task=task, server=server, restart_in=round(delay, 2))
            await sleep(delay)
        else:
            return
