"""The alert document shared by the webhook and Alertmanager sinks."""

from __future__ import annotations

from typing import Any

from watchdog.core.clock import iso, seconds
from watchdog.core.transitions import Resolved, Stalled


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
