"""What `/status`, the page and `status` say about recent problems and sessions, in one place.

Ids, states, times, directories, model names and the server's (cut) error messages: never
prompt or reply text, which the tracker never holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watchdog.core.clock import iso
from watchdog.core.tracker import SessionState, SessionView
from watchdog.sinks.recent import Incident

SESSIONS_LISTED = 50  # sessions per server in `/status` and on the page, most recent first
MAX_RETRY_MESSAGE = 200  # characters of the provider's retry message


def model_name(provider: str | None, model: str | None) -> str | None:
    """`provider/model`, or whichever is known; None when neither is."""
    return "/".join(x for x in (provider, model) if x) or None


def incident_doc(item: Incident) -> dict[str, Any]:
    """One recent stall or failure as `/status` lists it."""
    return {
        "kind": item.kind,
        "why": item.why,
        "at": iso(item.at),
        "waited_seconds": round(item.waited, 3),
        "cause": None
        if item.error is None
        else {"name": item.error, "message": item.error_message, "text": item.cause},
        "reason": item.reason,
        "server": item.server,
        "session_id": item.session_id,
        "message_id": item.message_id,
        "directory": item.directory,
        "provider": item.provider,
        "model": item.model,
        "firing": item.firing,
        "resolved_at": None if item.resolved_at is None else iso(item.resolved_at),
        "outcome": item.outcome,
    }


def _short(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def session_words(view: SessionView, wall: float) -> str:
    """The session's state in plain words: `retrying (attempt 3, next try in 12 s)`."""
    if view.state is SessionState.RETRYING and view.retry is not None:
        parts = []
        if view.retry.attempt is not None:
            parts.append(f"attempt {view.retry.attempt}")
        if view.retry.next_at is not None:
            wait = view.retry.next_at - wall
            parts.append(f"next try in {_short(wait)}" if wait > 0 else "next try due now")
        return f"retrying ({', '.join(parts)})" if parts else "retrying"
    if view.state is SessionState.WORKING and view.pending:
        return f"working on {view.pending} prompt{'s' if view.pending != 1 else ''}"
    return view.state.value


def history_doc(view: SessionView, wall: float) -> list[dict[str, Any]]:
    """Its state changes, oldest first, each with how long it lasted (the last one: so far)."""
    changes = view.history
    result = []
    for i, change in enumerate(changes):
        end = changes[i + 1].since if i + 1 < len(changes) else wall
        result.append(
            {
                "state": change.state.value,
                "since": iso(change.since),
                "lasted_seconds": round(max(0.0, end - change.since), 3),
                "current": i + 1 == len(changes),
            }
        )
    return result


def session_doc(view: SessionView, wall: float) -> dict[str, Any]:
    """One session as `/status` lists it."""
    retry = view.retry
    message = retry.message if retry is not None else None
    if message is not None and len(message) > MAX_RETRY_MESSAGE:
        message = message[: MAX_RETRY_MESSAGE - 1] + "…"
    return {
        "session_id": view.session_id,
        "parent_session_id": view.parent_session_id,
        "directory": view.directory,
        "state": view.state.value,
        "words": session_words(view, wall),
        "last_activity_at": iso(view.last_activity),
        "idle_seconds": round(max(0.0, wall - view.last_activity), 3),
        "pending": view.pending,
        "retry": None
        if retry is None
        else {
            "attempt": retry.attempt,
            "next_at": None if retry.next_at is None else iso(retry.next_at),
            "message": message,
        },
        "last_outcome": None if view.last_outcome is None else view.last_outcome.value,
        "last_outcome_at": None if view.last_outcome_at is None else iso(view.last_outcome_at),
        "history": history_doc(view, wall),
    }


def sessions_doc(views: Sequence[SessionView], wall: float) -> list[dict[str, Any]]:
    """Sessions, in the given order (most recent first)."""
    return [session_doc(v, wall) for v in views]
