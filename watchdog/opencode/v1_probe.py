"""Maps what the admission probe reads from OpenCode 1.x (REST answers, stream lines) to plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watchdog.core.events import StreamConnected
from watchdog.opencode.wire import (
    MAX_ERROR_MESSAGE,
    error_of,
    opt_str,
    parse_json,
    wire_ms,
)


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
    session_id = opt_str(body, "id")
    if session_id is None:
        return None
    time = body.get("time")
    # The stream decoder's guarded numbers: a 400-digit or NaN time is no time, never an error.
    updated = wire_ms(time.get("updated")) if isinstance(time, dict) else None
    return SessionInfo(
        session_id=session_id,
        title=opt_str(body, "title"),
        directory=opt_str(body, "directory"),
        updated_at=None if updated is None else updated / 1000.0,
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
    return opt_str(body, "model")


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
            session_id, message_id = opt_str(part, "sessionID"), opt_str(part, "messageID")
            text = part.get("text")
            if part.get("type") == "text" and session_id and message_id and isinstance(text, str):
                return PartText(session_id, message_id, text)
            return None
        case "session.error":
            name, message = error_of(props.get("error"))
            return ErrorInfo(
                session_id=opt_str(props, "sessionID"), name=name or "Unknown", message=message
            )
        case _:
            return None


def _message_info(info: Mapping[str, Any], texts: tuple[str, ...]) -> MessageInfo | None:
    session_id, message_id, role = (
        opt_str(info, "sessionID"),
        opt_str(info, "id"),
        opt_str(info, "role"),
    )
    if session_id is None or message_id is None or role is None:
        return None
    time = info.get("time")
    error = info.get("error")
    return MessageInfo(
        session_id=session_id,
        message_id=message_id,
        role=role,
        parent_id=opt_str(info, "parentID"),
        completed=isinstance(time, dict) and time.get("completed") is not None,
        finish=opt_str(info, "finish"),
        error=(opt_str(error, "name") or "Unknown") if isinstance(error, dict) else None,
        texts=texts,
    )


def decode_error_body(body: object) -> str | None:
    """An error answer ``{"name", "data": {"message"}}`` as ``name: message`` (message cut)."""
    if not isinstance(body, dict):
        return None
    name = opt_str(body, "name")
    data = body.get("data")
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str):
        return f"{name or 'Error'}: {message[:MAX_ERROR_MESSAGE]}"
    return name
