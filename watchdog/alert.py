"""The alert document shared by the webhook and Alertmanager sinks."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from watchdog.transitions import Resolved, Stalled


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


def document(transition: Stalled | Resolved) -> dict[str, Any]:
    """The webhook body: what fired or resolved, for which prompt, and how long it waited."""
    ref = transition.prompt
    body: dict[str, Any] = {
        "status": "firing" if isinstance(transition, Stalled) else "resolved",
        "kind": transition.kind.value,
        "server": ref.server,
        "session_id": ref.session_id,
        "message_id": ref.message_id,
        "accepted_at": iso(ref.accepted_at),
        "at": iso(transition.at),
        "waited_seconds": seconds(transition.waited),
        "directory": ref.directory,
        "parent_session_id": ref.parent_session_id,
        "provider": ref.provider,
        "model": ref.model,
    }
    if isinstance(transition, Stalled):
        body["reason"] = transition.reason
        error = transition.error
        body["error"] = None if error is None else {"name": error.name, "message": error.message}
        retry = transition.retry
        body["retry"] = (
            None
            if retry is None
            else {
                "attempt": retry.attempt,
                "message": retry.message,
                "next_at": iso(retry.next_at) if retry.next_at else None,
            }
        )
    else:
        body["outcome"] = transition.outcome.value if transition.outcome else None
    return body


def describe(transition: Stalled | Resolved) -> str:
    """A short log-safe label for a delivery: kind, status and ids."""
    status = "firing" if isinstance(transition, Stalled) else "resolved"
    ref = transition.prompt
    return f"{transition.kind.value}/{status} {ref.server} {ref.session_id} {ref.message_id}"
