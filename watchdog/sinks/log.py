"""Writes every transition as a structured log event (ids, timings, states; never text)."""

from __future__ import annotations

from typing import Any

import structlog

from watchdog.core.clock import iso, seconds
from watchdog.core.transitions import (
    Accepted,
    Completed,
    FirstResponse,
    Resolved,
    Stalled,
    Transition,
)


class LogSink:
    """Stalls are warnings, resolutions and endings are info, the rest debug."""

    def __init__(self, logger: Any | None = None) -> None:
        self._log = logger or structlog.get_logger("watchdog.prompts")

    def emit(self, transition: Transition) -> None:
        ref = transition.prompt
        ids: dict[str, Any] = {
            "server": ref.server,
            "session_id": ref.session_id,
            "message_id": ref.message_id,  # None for a prompt that failed before it was stored
            "accepted_at": iso(ref.accepted_at),
        }
        if ref.directory:
            ids["directory"] = ref.directory
        if ref.parent_session_id:
            ids["parent_session_id"] = ref.parent_session_id
        match transition:
            case Stalled(kind=kind, waited=waited, retry=retry, reason=reason, error=error):
                extra: dict[str, Any] = {}
                if error is not None:
                    extra.update(error_name=error.name, error_message=error.message)
                if retry is not None:
                    extra = {"retry_attempt": retry.attempt, "retry_message": retry.message}
                if reason:
                    extra["reason"] = reason
                if ref.provider:
                    extra.update(provider=ref.provider, model=ref.model)
                self._log.warning(
                    "prompt.stalled",
                    kind=kind.value,
                    waited_seconds=seconds(waited),
                    **ids,
                    **extra,
                )
            case Resolved(kind=kind, waited=waited, outcome=outcome):
                self._log.info(
                    "prompt.resolved",
                    kind=kind.value,
                    waited_seconds=seconds(waited),
                    outcome=outcome.value if outcome else None,
                    **ids,
                )
            case Completed(outcome=outcome, duration=duration, reason=reason):
                self._log.info(
                    "prompt.completed",
                    outcome=outcome.value,
                    duration_seconds=round(duration, 3),
                    reason=reason,
                    **ids,
                )
            case Accepted():
                self._log.info("prompt.accepted", **ids)
            case FirstResponse(latency=latency):
                self._log.debug("prompt.first_response", latency_seconds=round(latency, 3), **ids)
