"""Time: a server's clock mapped onto ours, and wall-clock seconds written for people (never raising)."""

from __future__ import annotations

import math
from collections import deque
from datetime import UTC, datetime


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds; None for a time no date can show (NaN, infinite, 1e300).

    Times can come from a peer: formatting one must never cost the alert it belongs to.
    """
    if ts is None or not math.isfinite(ts):
        return None
    try:
        moment = datetime.fromtimestamp(ts, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds(value: float) -> float | None:
    """A duration for JSON, rounded to milliseconds; None when not finite (JSON has no NaN)."""
    return round(value, 3) if math.isfinite(value) else None


# The clock offset is the smallest delay seen between a server timestamp and its arrival, over
# this many recent samples (a window, so that a server clock step ages out).
OFFSET_SAMPLES = 32
# Server times further than this from our wall clock are not an offset but a clock (or an id
# format) we cannot use: such samples are ignored, so that they never age a prompt by days.
MAX_CLOCK_SKEW = 3600.0


class ServerClock:
    """Maps a server's wall-clock timestamps onto our monotonic clock.

    Each sample is an event the server stamped and we received: our monotonic time at arrival
    minus the server's stamp. The smallest over a window is the server-to-monotonic offset plus
    the fastest delivery seen, so ``to_monotonic`` places a server time on the clock our
    deadlines run on. Our own wall clock only guards against unusable samples: a step of it (NTP,
    a VM resume) moves no prompt's time.
    """

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=OFFSET_SAMPLES)

    def observe(self, server_time: float, now: float, wall: float) -> None:
        """Note an event stamped ``server_time`` (server wall seconds), received at ``now``."""
        delay = wall - server_time
        if math.isfinite(delay) and abs(delay) <= MAX_CLOCK_SKEW and math.isfinite(now):
            self._samples.append(now - server_time)

    def to_monotonic(self, server_time: float) -> float | None:
        """``server_time`` on our monotonic clock; None before any sample."""
        offset = min(self._samples, default=None)
        return None if offset is None else server_time + offset

    @property
    def offset(self) -> float | None:
        """Our monotonic clock minus the server's, plus the fastest delivery; None before a sample."""
        return min(self._samples, default=None)
