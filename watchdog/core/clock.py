"""Time for people: wall-clock seconds as RFC 3339, durations for JSON; never raises on odd values."""

from __future__ import annotations

import math
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
