"""Maps OpenCode 1.x event JSON (`/event`, `/global/event`) to the tracker's typed events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from watchdog.events import (
    Event,
    Heartbeat,
    HumanAnswered,
    HumanAsked,
    Ignored,
    Malformed,
    PartKind,
    PromptAdmitted,
    PromptSnapshot,
    ReplyActivity,
    ReplyFinished,
    ReplyOpened,
    ReplySnapshot,
    SessionFailed,
    SessionRun,
    SessionSeen,
    SessionSnapshot,
    StatusChanged,
    StreamConnected,
    ToolProgress,
)

# Part types in which the model says something. Everything else (step-start, step-finish, patch,
# snapshot, agent, compaction...) is bookkeeping: activity, but not a first response.
CONTENT_PARTS = frozenset({"text", "reasoning", "tool", "file"})

# Types the tracker does not need but that are part of the protocol; anything else is "unknown".
KNOWN_IGNORED = frozenset(
    {
        "session.diff",
        "session.deleted",
        "session.compacted",
        "message.removed",
        "message.part.removed",
        "file.edited",
        "file.watcher.updated",
        "todo.updated",
        "lsp.updated",
        "plugin.added",
        "catalog.updated",
        "reference.updated",
        "integration.updated",
        "installation.updated",
        "installation.update-available",
        "project.updated",
        "vcs.branch.updated",
        "command.executed",
        "server.instance.disposed",
        "global.disposed",
    }
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded stream line: the event, its wire type, its id and (global stream) directory."""

    event: Event
    type: str
    event_id: str | None = None
    directory: str | None = None


# `/global/event` wraps each payload as {"directory": "...", "project": "...", "payload": {...}} and
# repeats every state change as a `sync` payload. When no object opens before the first
# `"payload":` (inside a JSON string that text would be escaped), that key is the wrapper's, and
# the payload's first key says it is a duplicate: skipped without parsing ~500 bytes of JSON.
_PAYLOAD_KEY = '"payload":'
_SYNC_PAYLOAD = '{"type":"sync"'
DELTA = "message.part.delta"
_DELTA_MARK = '"type":"message.part.delta"'
# Deltas (most of a busy stream) repeat the same reply's ids: their events are shared, not rebuilt.
_ACTIVITY_CACHE_SIZE = 1024
_activity_events: dict[tuple[str, str], tuple[str, ReplyActivity]] = {}


class _BadFieldError(Exception):
    """A required field is missing or has the wrong type; the message names the field only."""


def decode_line(data: str, *, directory_scoped: bool) -> Decoded | None:
    """Decode one SSE ``data`` field; never raises.

    Returns None for `/global/event` sync duplicates, which repeat an event already delivered.
    ``directory_scoped`` is false for `/global/event`, whose payloads are wrapped as
    ``{"directory", "project", "payload"}``.
    """
    if not directory_scoped and _is_sync_duplicate(data):
        return None
    if _DELTA_MARK in data and (delta := _delta_payload(data, directory_scoped)) is not None:
        delta_id = delta[0].get("id")
        return Decoded(
            delta[2][1], DELTA, delta_id if isinstance(delta_id, str) else None, delta[1]
        )
    try:
        obj = json.loads(data)
    except ValueError:
        return Decoded(Malformed(type="?", reason="invalid JSON"), "?")
    if not isinstance(obj, dict):
        return Decoded(Malformed(type="?", reason="not a JSON object"), "?")
    directory: str | None = None
    if not directory_scoped:
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            return Decoded(Malformed(type="?", reason="global event without payload object"), "?")
        raw_dir = obj.get("directory")
        directory = raw_dir if isinstance(raw_dir, str) else None
        if payload.get("type") == "sync":
            return None
        obj = payload
    event = decode_event(obj, directory=directory)
    etype = obj.get("type")
    eid = obj.get("id")
    return Decoded(
        event=event,
        type=etype if isinstance(etype, str) else "?",
        event_id=eid if isinstance(eid, str) else None,
        directory=directory,
    )


def decode_typed(data: str, *, directory_scoped: bool) -> tuple[str, Event] | None:
    """``decode_line`` without the event id and directory: the wire type and the event.

    What a live stream needs, for less: a delta's pair is shared with the other deltas of its reply.
    """
    if not directory_scoped and _is_sync_duplicate(data):
        return None
    if _DELTA_MARK in data and (delta := _delta_payload(data, directory_scoped)) is not None:
        return delta[2]
    decoded = decode_line(data, directory_scoped=directory_scoped)
    return None if decoded is None else (decoded.type, decoded.event)


def _delta_payload(
    data: str, directory_scoped: bool
) -> tuple[dict[str, Any], str | None, tuple[str, ReplyActivity]] | None:
    """A well-formed delta's payload, directory and event, as the general path would decode it;
    None leaves the line to that path.

    orjson parses a delta in a third of json's time. What it refuses (a lone surrogate from an
    emoji split between two deltas, for one) and anything that is not a plain delta goes the
    general way, through json, so numbers and errors stay exactly as json reads them.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    directory: str | None = None
    if not directory_scoped:
        raw_dir = obj.get("directory")
        directory = raw_dir if isinstance(raw_dir, str) else None
        obj = obj.get("payload")
        if not isinstance(obj, dict):
            return None
    if obj.get("type") != DELTA or (pair := _delta(obj.get("properties"))) is None:
        return None
    return obj, directory, pair


def _is_sync_duplicate(data: str) -> bool:
    at = data.find(_PAYLOAD_KEY)
    return (
        at > 0
        and data.startswith(_SYNC_PAYLOAD, at + len(_PAYLOAD_KEY))
        and data.startswith("{")
        and data.find("{", 1, at) == -1
    )


def _delta(props: object) -> tuple[str, ReplyActivity] | None:
    """A well-formed delta's event, as ``_decode`` makes it; None sends it down the general path."""
    if not isinstance(props, dict):
        return None
    session_id, message_id = props.get("sessionID"), props.get("messageID")
    if not (
        isinstance(session_id, str) and session_id and isinstance(message_id, str) and message_id
    ):
        return None
    key = (session_id, message_id)
    pair = _activity_events.get(key)
    if pair is None:
        if len(_activity_events) >= _ACTIVITY_CACHE_SIZE:
            _activity_events.clear()
        activity = ReplyActivity(session_id, message_id, PartKind.CONTENT)
        pair = _activity_events[key] = (DELTA, activity)
    return pair


def decode_event(obj: Mapping[str, Any], *, directory: str | None = None) -> Event:
    """Decode one event object ``{"type", "properties"}``; never raises."""
    etype = obj.get("type")
    if not isinstance(etype, str):
        return Malformed(type="?", reason="missing type")
    props = obj.get("properties", {})
    if not isinstance(props, dict):
        return Malformed(type=etype, reason="properties is not an object")
    try:
        return _decode(etype, props, directory)
    except _BadFieldError as exc:
        return Malformed(type=etype, reason=str(exc))


def _decode(etype: str, p: Mapping[str, Any], directory: str | None) -> Event:
    match etype:
        case "server.connected":
            return StreamConnected()
        case "server.heartbeat":
            return Heartbeat()
        case "session.created" | "session.updated":
            info = _obj(p, "info")
            return SessionSeen(
                session_id=_str(info, "id"),
                parent_session_id=_opt_str(info, "parentID"),
                directory=_opt_str(info, "directory") or directory,
            )
        case "message.updated":
            return _message(_obj(p, "info"), directory)
        case "message.part.updated":
            return _part(_obj(p, "part"))
        case "message.part.delta":
            return ReplyActivity(
                session_id=_str(p, "sessionID"),
                message_id=_str(p, "messageID"),
                kind=PartKind.CONTENT,
            )
        case "session.status":
            return _status(_str(p, "sessionID"), _obj(p, "status"))
        case "session.idle":
            return StatusChanged(session_id=_str(p, "sessionID"), run=SessionRun.IDLE)
        case "session.error":
            session_id = _opt_str(p, "sessionID")
            if session_id is None:
                # Errors outside a session (e.g. provider auth at start-up) concern no prompt.
                return Ignored(type=etype, known=True)
            error = p.get("error")
            name = error.get("name") if isinstance(error, dict) else None
            return SessionFailed(
                session_id=session_id, error=name if isinstance(name, str) else "Unknown"
            )
        case "permission.asked" | "question.asked" | "permission.v2.asked" | "question.v2.asked":
            return HumanAsked(session_id=_str(p, "sessionID"), request_id=_str(p, "id"))
        case (
            "permission.replied"
            | "question.replied"
            | "question.rejected"
            | "permission.v2.replied"
            | "question.v2.replied"
            | "question.v2.rejected"
        ):
            return HumanAnswered(session_id=_str(p, "sessionID"), request_id=_str(p, "requestID"))
        case _:
            known = etype in KNOWN_IGNORED or etype.startswith(("session.next.", "tui.", "pty."))
            return Ignored(type=etype, known=known)


def _message(info: Mapping[str, Any], directory: str | None) -> Event:
    role = _str(info, "role")
    session_id = _str(info, "sessionID")
    message_id = _str(info, "id")
    time = _obj(info, "time")
    if role == "user":
        if "summary" in info:
            # OpenCode re-sends a stored user message with its diff summary after each run; an
            # admission (first or repeated messageID) never carries one.
            return Ignored(type="message.updated", known=True)
        return PromptAdmitted(
            session_id=session_id,
            message_id=message_id,
            created_at=_ms(time, "created") / 1000.0,
            directory=directory,
        )
    if role != "assistant":
        raise _BadFieldError("unknown role")
    parent_id = _str(info, "parentID")
    if time.get("completed") is None:
        return ReplyOpened(
            session_id=session_id,
            message_id=message_id,
            parent_id=parent_id,
            provider=_opt_str(info, "providerID"),
            model=_opt_str(info, "modelID"),
        )
    _ms(time, "completed")
    error = info.get("error")
    error_name: str | None = None
    if isinstance(error, dict):
        name = error.get("name")
        error_name = name if isinstance(name, str) else "Unknown"
    return ReplyFinished(
        session_id=session_id,
        message_id=message_id,
        parent_id=parent_id,
        finish=_opt_str(info, "finish"),
        error=error_name,
    )


def _part(part: Mapping[str, Any]) -> Event:
    session_id = _str(part, "sessionID")
    message_id = _str(part, "messageID")
    ptype = _str(part, "type")
    if ptype == "tool":
        state = _obj(part, "state")
        status = _str(state, "status")
        return ToolProgress(
            session_id=session_id,
            message_id=message_id,
            call_id=_opt_str(part, "callID") or _str(part, "id"),
            running=status in ("pending", "running"),
        )
    kind = PartKind.CONTENT if ptype in CONTENT_PARTS else PartKind.STEP
    return ReplyActivity(session_id=session_id, message_id=message_id, kind=kind)


def _status(session_id: str, status: Mapping[str, Any]) -> Event:
    stype = _str(status, "type")
    try:
        run = SessionRun(stype)
    except ValueError:
        raise _BadFieldError(f"unknown session status {stype!r}"[:60]) from None
    if run is not SessionRun.RETRY:
        return StatusChanged(session_id=session_id, run=run)
    attempt = status.get("attempt")
    message = status.get("message")
    next_ms = status.get("next")
    return StatusChanged(
        session_id=session_id,
        run=run,
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        retry_message=message[:200] if isinstance(message, str) else None,
        next_retry_at=float(next_ms) / 1000.0 if isinstance(next_ms, int | float) else None,
    )


def _obj(m: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = m.get(key)
    if not isinstance(value, dict):
        raise _BadFieldError(f"{key} is not an object")
    return value


def _str(m: Mapping[str, Any], key: str) -> str:
    value = m.get(key)
    if not isinstance(value, str) or not value:
        raise _BadFieldError(f"{key} is not a non-empty string")
    return value


def _opt_str(m: Mapping[str, Any], key: str) -> str | None:
    value = m.get(key)
    return value if isinstance(value, str) and value else None


def _ms(m: Mapping[str, Any], key: str) -> float:
    value = m.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _BadFieldError(f"time.{key} is not a number")
    return float(value)


# -- REST answers (read after (re)connecting) ---------------------------------------------------


def decode_status_map(body: object) -> dict[str, StatusChanged]:
    """`GET /session/status`: ``{sessionID: {type: busy|retry, ...}}``; idle sessions are absent.

    Entries that do not decode are left out (the session then counts as not running).
    """
    if not isinstance(body, dict):
        return {}
    result: dict[str, StatusChanged] = {}
    for session_id, status in body.items():
        if not isinstance(session_id, str) or not isinstance(status, dict):
            continue
        try:
            event = _status(session_id, status)
        except _BadFieldError:
            continue
        if isinstance(event, StatusChanged):
            result[session_id] = event
    return result


def decode_session_messages(
    session_id: str,
    body: object,
    *,
    status: StatusChanged | None,
    taken_at: float,
    directory: str | None = None,
    waiting_on: tuple[str, ...] = (),
    restarted: bool = False,
) -> SessionSnapshot:
    """`GET /session/{id}/message` (``[{info, parts}]``, oldest first) as one snapshot.

    Messages that do not decode are skipped: a snapshot is a best effort, the stream is the truth.
    """
    prompts: dict[str, PromptSnapshot] = {}
    order: list[str] = []
    replies: dict[str, list[ReplySnapshot]] = {}
    for item in body if isinstance(body, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("info"), dict):
            continue
        info = item["info"]
        raw_parts = item.get("parts")
        parts: list[Any] = raw_parts if isinstance(raw_parts, list) else []
        try:
            role = _str(info, "role")
            message_id = _str(info, "id")
            time = _obj(info, "time")
            if role == "user":
                prompts[message_id] = PromptSnapshot(message_id, _ms(time, "created") / 1000.0)
                order.append(message_id)
            elif role == "assistant":
                replies.setdefault(_str(info, "parentID"), []).append(_reply(info, time, parts))
        except _BadFieldError:
            continue
    run = status.run if status is not None else SessionRun.IDLE
    return SessionSnapshot(
        session_id=session_id,
        run=run,
        taken_at=taken_at,
        prompts=tuple(
            PromptSnapshot(p.message_id, p.created_at, tuple(replies.get(p.message_id, ())))
            for p in (prompts[m] for m in order)
        ),
        directory=directory,
        attempt=status.attempt if status else None,
        retry_message=status.retry_message if status else None,
        next_retry_at=status.next_retry_at if status else None,
        waiting_on=waiting_on,
        restarted=restarted,
    )


def decode_waiting(body: object) -> dict[str, list[str]]:
    """`GET /permission` or `GET /question`: pending request ids by session."""
    result: dict[str, list[str]] = {}
    for item in body if isinstance(body, list) else []:
        if isinstance(item, dict):
            rid, sid = item.get("id"), item.get("sessionID")
            if isinstance(rid, str) and isinstance(sid, str):
                result.setdefault(sid, []).append(rid)
    return result


def decode_directories(body: object) -> list[str]:
    """`GET /project`: the worktrees OpenCode knows, to read each directory's sessions."""
    if not isinstance(body, list):
        return []
    return [
        p["worktree"]
        for p in body
        if isinstance(p, dict) and isinstance(p.get("worktree"), str) and p["worktree"] != "/"
    ]


def _reply(info: Mapping[str, Any], time: Mapping[str, Any], parts: list[Any]) -> ReplySnapshot:
    error = info.get("error")
    error_name = None
    if isinstance(error, dict):
        name = error.get("name")
        error_name = name if isinstance(name, str) else "Unknown"
    running: list[str] = []
    has_content = False
    for part in parts:
        if not isinstance(part, dict):
            continue
        if part.get("type") in CONTENT_PARTS:
            has_content = True
        state = part.get("state")
        tool_at_work = isinstance(state, dict) and state.get("status") in ("pending", "running")
        if part.get("type") == "tool" and tool_at_work:
            running.append(str(part.get("callID") or part.get("id")))
    return ReplySnapshot(
        message_id=_str(info, "id"),
        completed=time.get("completed") is not None,
        finish=_opt_str(info, "finish"),
        error=error_name,
        has_content=has_content,
        running_tools=tuple(running),
    )
