"""Maps OpenCode 1.x event JSON (`/event`, `/global/event`) to the tracker's typed events."""

from __future__ import annotations

import json
import math
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
    SessionDeleted,
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
# The title of the admission probe's sessions (watchdog/probe.py): the one title the stream's
# readers need, so it is kept in recordings, where other titles (made from prompts) are not.
PROBE_TITLE = "opencode-watchdog probe"
# Error messages go into alerts: long enough for a cause, short enough for a phone's notification.
MAX_ERROR_MESSAGE = 300

# Types the tracker does not need but that are part of the protocol; anything else is "unknown".
KNOWN_IGNORED = frozenset(
    {
        "session.diff",
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


# Wire times are milliseconds since the epoch. Anything outside [1970, 9999] is not a time a
# server meant: datetime cannot format it, and arithmetic on it gives nonsense or overflows.
_MAX_MS = 253_402_300_799_999.0
# Retry attempts beyond this are not counts but attacks on whoever formats them.
_MAX_ATTEMPT = 1_000_000


def parse_json(data: str | bytes) -> object:
    """``json.loads`` for peer data; raises ``ValueError`` for anything it cannot safely return.

    The stdlib parser raises ``RecursionError`` on deep nesting (100 000 ``[``) and accepts
    ``NaN``/``Infinity``, which are not JSON; both become ``ValueError`` here.
    """
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def wire_ms(value: object) -> float | None:
    """A wire time in milliseconds since the epoch, or None when unusable.

    Unusable: not a number, a bool, NaN, infinite, negative, beyond year 9999, or an integer too
    large for a float (a 400-digit ``created``).
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        ms = float(value)
    except OverflowError:
        return None
    if not math.isfinite(ms) or not 0.0 <= ms <= _MAX_MS:
        return None
    return ms


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
        return _decode_line(data, directory_scoped=directory_scoped)
    except Exception:  # last resort: a decoder bug must cost one event, never the stream
        return Decoded(Malformed(type="?", reason="undecodable"), "?")


def _decode_line(data: str, *, directory_scoped: bool) -> Decoded | None:
    try:
        obj = parse_json(data)
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


def event_time(event_id: str | None, near: float) -> float | None:
    """When the server created an event, from its ascending ``evt_`` id, in seconds since the epoch.

    The 12 hex digits after the prefix are ``(ms_epoch * 4096 + counter) mod 2**48``: the time
    modulo 2**36 ms (about 795 days). ``near`` (our clock) supplies the high bits.
    """
    if event_id is None or not event_id.startswith("evt_"):
        return None
    try:
        low = int(event_id[4:16], 16) // 4096
    except ValueError:
        return None
    near_ms = int(near * 1000)
    wrap = 1 << 36
    # The candidate closest to ``near``: clocks that disagree by less than a year still match.
    ms = near_ms - ((near_ms - low + wrap // 2) % wrap) + wrap // 2
    return ms / 1000.0


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
                probe=_opt_str(info, "title") == PROBE_TITLE,
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
            name, message = _error(p.get("error"))
            return SessionFailed(session_id=session_id, error=name or "Unknown", message=message)
        case "session.deleted":
            deleted = p.get("info")
            sid = _opt_str(p, "sessionID") or (
                _opt_str(deleted, "id") if isinstance(deleted, dict) else None
            )
            if sid is None:
                raise _BadFieldError("sessionID is not a non-empty string")
            return SessionDeleted(session_id=sid)
        case "permission.asked" | "question.asked" | "permission.v2.asked" | "question.v2.asked":
            return HumanAsked(session_id=_str(p, "sessionID"), request_id=_str(p, "id"))
        case (
            "permission.replied"
            | "question.replied"
            | "permission.v2.replied"
            | "question.v2.replied"
        ):
            return HumanAnswered(
                session_id=_str(p, "sessionID"),
                request_id=_str(p, "requestID"),
                rejected=p.get("reply") == "reject",
            )
        case "question.rejected" | "question.v2.rejected":
            return HumanAnswered(
                session_id=_str(p, "sessionID"), request_id=_str(p, "requestID"), rejected=True
            )
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
    error_name, error_message = _error(info.get("error"))
    return ReplyFinished(
        session_id=session_id,
        message_id=message_id,
        parent_id=parent_id,
        finish=_opt_str(info, "finish"),
        error=error_name,
        error_message=error_message,
    )


def _error(error: object) -> tuple[str | None, str | None]:
    """An OpenCode error ``{name, data: {message}}`` as (name, cut message); (None, None) if absent."""
    if not isinstance(error, dict):
        return None, None
    name = error.get("name")
    data = error.get("data")
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str) and message:
        message = message.strip()
        if len(message) > MAX_ERROR_MESSAGE:
            message = message[: MAX_ERROR_MESSAGE - 1] + "…"
    else:
        message = None
    return (name if isinstance(name, str) and name else "Unknown"), message


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
    next_checked = wire_ms(next_ms)
    if next_ms is not None and next_checked is None:
        raise _BadFieldError("status.next is not a usable time")
    usable_attempt = (
        isinstance(attempt, int) and not isinstance(attempt, bool) and 0 <= attempt <= _MAX_ATTEMPT
    )
    return StatusChanged(
        session_id=session_id,
        run=run,
        attempt=attempt if usable_attempt else None,
        retry_message=message[:200] if isinstance(message, str) else None,
        next_retry_at=next_checked / 1000.0 if next_checked is not None else None,
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
    """A required wire time, in milliseconds since the epoch (checked: see ``wire_ms``)."""
    ms = wire_ms(m.get(key))
    if ms is None:
        raise _BadFieldError(f"time.{key} is not a usable time")
    return ms


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
        except Exception:  # noqa: S112 - a message that does not decode is skipped, never fatal
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
    error_name, error_message = _error(info.get("error"))
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
        error_message=error_message,
        has_content=has_content,
        running_tools=tuple(running),
    )


# -- Admission probe: its own REST answers and the stream lines that concern its prompt ---------


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as `POST /session`, `GET /session` or `GET /session/{id}` describe it."""

    session_id: str
    title: str | None
    directory: str | None
    updated_at: float | None  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """A message of a session (REST or a `message.updated` event); ``texts`` are its text parts."""

    session_id: str
    message_id: str
    role: str
    parent_id: str | None = None
    completed: bool = False
    finish: str | None = None
    error: str | None = None
    texts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PartText:
    """A text part was stored or changed (`message.part.updated` of type text)."""

    session_id: str
    message_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """`session.error`: the error's name and the start of its message (never prompt text)."""

    session_id: str | None
    name: str
    message: str | None


ProbeLine = StreamConnected | MessageInfo | PartText | ErrorInfo


def decode_session_info(body: object) -> SessionInfo | None:
    """One session object; None when it has no id."""
    if not isinstance(body, dict):
        return None
    session_id = _opt_str(body, "id")
    if session_id is None:
        return None
    time = body.get("time")
    updated = time.get("updated") if isinstance(time, dict) else None
    return SessionInfo(
        session_id=session_id,
        title=_opt_str(body, "title"),
        directory=_opt_str(body, "directory"),
        updated_at=float(updated) / 1000.0 if isinstance(updated, int | float) else None,
    )


def decode_session_list(body: object) -> list[SessionInfo]:
    """`GET /session`: every session that decodes."""
    found = [decode_session_info(item) for item in body] if isinstance(body, list) else []
    return [s for s in found if s is not None]


def decode_message_list(body: object) -> list[MessageInfo]:
    """`GET /session/{id}/message`: ``[{info, parts}]`` oldest first; undecodable ones skipped."""
    result: list[MessageInfo] = []
    for item in body if isinstance(body, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("info"), dict):
            continue
        parts = item.get("parts")
        texts = tuple(
            p["text"]
            for p in (parts if isinstance(parts, list) else [])
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
        info = _message_info(item["info"], texts)
        if info is not None:
            result.append(info)
    return result


def decode_default_model(body: object) -> str | None:
    """`GET /config`: the configured default model, ``provider/model``."""
    if not isinstance(body, dict):
        return None
    return _opt_str(body, "model")


def decode_probe_line(data: str, *, directory_scoped: bool) -> ProbeLine | None:
    """One stream line as the probe needs it; None for everything else. Never raises."""
    try:
        obj = parse_json(data)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if not directory_scoped:
        obj = obj.get("payload")
        if not isinstance(obj, dict):
            return None
    props = obj.get("properties")
    if not isinstance(props, dict):
        return None
    match obj.get("type"):
        case "server.connected":
            return StreamConnected()
        case "message.updated" if isinstance(props.get("info"), dict):
            return _message_info(props["info"], ())
        case "message.part.updated" if isinstance(props.get("part"), dict):
            part = props["part"]
            session_id, message_id = _opt_str(part, "sessionID"), _opt_str(part, "messageID")
            text = part.get("text")
            if part.get("type") == "text" and session_id and message_id and isinstance(text, str):
                return PartText(session_id, message_id, text)
            return None
        case "session.error":
            name, message = _error(props.get("error"))
            return ErrorInfo(
                session_id=_opt_str(props, "sessionID"), name=name or "Unknown", message=message
            )
        case _:
            return None


def _message_info(info: Mapping[str, Any], texts: tuple[str, ...]) -> MessageInfo | None:
    session_id, message_id, role = (
        _opt_str(info, "sessionID"),
        _opt_str(info, "id"),
        _opt_str(info, "role"),
    )
    if session_id is None or message_id is None or role is None:
        return None
    time = info.get("time")
    error = info.get("error")
    return MessageInfo(
        session_id=session_id,
        message_id=message_id,
        role=role,
        parent_id=_opt_str(info, "parentID"),
        completed=isinstance(time, dict) and time.get("completed") is not None,
        finish=_opt_str(info, "finish"),
        error=(_opt_str(error, "name") or "Unknown") if isinstance(error, dict) else None,
        texts=texts,
    )


def decode_error_body(body: object) -> str | None:
    """An error answer ``{"name", "data": {"message"}}`` as ``name: message`` (message cut)."""
    if not isinstance(body, dict):
        return None
    name = _opt_str(body, "name")
    data = body.get("data")
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str):
        return f"{name or 'Error'}: {message[:MAX_ERROR_MESSAGE]}"
    return name


# -- recordings (`run --record`) ----------------------------------------------------------------

# Keys under which OpenCode 1.x carries what people wrote or what the model said, or what is made
# from it: message and part text, streamed deltas, session titles (written from the first prompt),
# tool input and output, diffs, todos, questions and permission patterns. None of them is read by
# the decoder above except for its presence (a user message's `summary`), so a recording keeps
# each key and empties its value: the recording then decodes to exactly the same events.
TEXT_KEYS = frozenset(
    {
        "text",
        "delta",
        "title",
        "input",
        "output",
        "raw",
        "metadata",
        "diff",
        "diffs",
        "summary",
        "todos",
        "questions",
        "answers",
        "patterns",
        "prompt",
        "description",
        "content",
        "body",
        "system",
        "snapshot",
        "attachments",
    }
)
MAX_STRIP_DEPTH = 64  # deeper nesting is not OpenCode's; it is cut off rather than walked


def strip_text(value: Any, *, _depth: int = 0) -> Any:
    """A copy of an event object with the values of ``TEXT_KEYS`` emptied, at any depth."""
    if _depth > MAX_STRIP_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            key: _emptied(item)
            if key in TEXT_KEYS and not (key == "title" and item == PROBE_TITLE)
            else strip_text(item, _depth=_depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [strip_text(item, _depth=_depth + 1) for item in value]
    return value


def _emptied(value: Any) -> Any:
    if isinstance(value, str):
        return ""
    if isinstance(value, dict):
        return {}
    if isinstance(value, list):
        return []
    return value
