"""Maps OpenCode 1.x event JSON (`/event`, `/global/event`) to the tracker's typed events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from watchdog.core.events import (
    Event,
    Heartbeat,
    HumanAnswered,
    HumanAsked,
    Ignored,
    Malformed,
    PartKind,
    PromptAdmitted,
    ReplyActivity,
    ReplyFinished,
    ReplyOpened,
    SessionDeleted,
    SessionFailed,
    SessionRun,
    SessionSeen,
    StatusChanged,
    StreamConnected,
    Tokens,
    ToolProgress,
)
from watchdog.core.server import Line
from watchdog.opencode.ids import event_time
from watchdog.opencode.wire import (
    BadFieldError,
    amount,
    count,
    error_of,
    field_ms,
    field_obj,
    field_str,
    opt_str,
    parse_event,
    wire_ms,
)

# Part types in which the model says something. Everything else (step-start, step-finish, patch,
# snapshot, agent, compaction...) is bookkeeping: activity, but not a first response.
CONTENT_PARTS = frozenset({"text", "reasoning", "tool", "file"})
# The title of the admission probe's sessions (watchdog/probe.py): the one title the stream's
# readers need, so it is kept in recordings, where other titles (made from prompts) are not.
PROBE_TITLE = "opencode-watchdog probe"
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
_activity_lines: dict[tuple[str, str], Line] = {}


# Retry attempts beyond this are not counts but attacks on whoever formats them.
_MAX_ATTEMPT = 1_000_000


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
            delta[2].event, DELTA, delta_id if isinstance(delta_id, str) else None, delta[1]
        )
    return _decode_general(data, directory_scoped)


def _decode_general(data: str, directory_scoped: bool) -> Decoded | None:
    """The full parse and decode of a line past the shortcuts; never raises."""
    try:
        return _decode_line(data, directory_scoped=directory_scoped)
    except Exception:  # last resort: a decoder bug must cost one event, never the stream
        return Decoded(Malformed(type="?", reason="undecodable"), "?")


def _decode_line(data: str, *, directory_scoped: bool) -> Decoded | None:
    try:
        obj = parse_event(data)
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


class V1Stream:
    """OpenCode 1.x's event stream as a wire format: `/global/event` (each event wrapped with its
    directory, state changes repeated as `sync` duplicates) or the per-directory `/event`."""

    api = "v1"

    def __init__(self, *, directory_scoped: bool) -> None:
        self.directory_scoped = directory_scoped

    def decode(self, data: str, wall: float) -> Line | None:
        """One line; None for a sync duplicate. Deltas, most of a busy stream, share their lines."""
        scoped = self.directory_scoped
        if not scoped and _is_sync_duplicate(data):
            return None
        if _DELTA_MARK in data and (delta := _delta_payload(data, scoped)) is not None:
            return delta[2]
        decoded = _decode_general(data, scoped)
        if decoded is None:
            return None
        event = decoded.event
        # The connect greeting and the heartbeats (every 10 s) sample the server's clock, so
        # that prompts are timed alike whether seen live or found over REST.
        sent = event_time(decoded.event_id, wall) if isinstance(event, _CLOCK_EVENTS) else None
        return Line(decoded.type, event, sent)


_CLOCK_EVENTS = (StreamConnected, Heartbeat)


def decode_typed(data: str, *, directory_scoped: bool) -> tuple[str, Event] | None:
    """``decode_line`` without the event id and directory: the wire type and the event.

    What a live stream needs, for less: a delta's pair is shared with the other deltas of its reply.
    """
    if not directory_scoped and _is_sync_duplicate(data):
        return None
    if _DELTA_MARK in data and (delta := _delta_payload(data, directory_scoped)) is not None:
        return delta[2].type, delta[2].event
    decoded = decode_line(data, directory_scoped=directory_scoped)
    return None if decoded is None else (decoded.type, decoded.event)


def _delta_payload(
    data: str, directory_scoped: bool
) -> tuple[dict[str, Any], str | None, Line] | None:
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


def _delta(props: object) -> Line | None:
    """A well-formed delta's event, as ``_decode`` makes it; None sends it down the general path."""
    if not isinstance(props, dict):
        return None
    session_id, message_id = props.get("sessionID"), props.get("messageID")
    if not (
        isinstance(session_id, str) and session_id and isinstance(message_id, str) and message_id
    ):
        return None
    key = (session_id, message_id)
    line = _activity_lines.get(key)
    if line is None:
        if len(_activity_lines) >= _ACTIVITY_CACHE_SIZE:
            _activity_lines.clear()
        line = _activity_lines[key] = Line(
            DELTA, ReplyActivity(session_id, message_id, PartKind.CONTENT)
        )
    return line


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
    except BadFieldError as exc:
        return Malformed(type=etype, reason=str(exc))


def _decode(etype: str, p: Mapping[str, Any], directory: str | None) -> Event:
    match etype:
        case "server.connected":
            return StreamConnected()
        case "server.heartbeat":
            return Heartbeat()
        case "session.created" | "session.updated":
            info = field_obj(p, "info")
            return SessionSeen(
                session_id=field_str(info, "id"),
                parent_session_id=opt_str(info, "parentID"),
                directory=opt_str(info, "directory") or directory,
                probe=opt_str(info, "title") == PROBE_TITLE,
            )
        case "message.updated":
            return _message(field_obj(p, "info"), directory)
        case "message.part.updated":
            return _part(field_obj(p, "part"))
        case "message.part.delta":
            return ReplyActivity(
                session_id=field_str(p, "sessionID"),
                message_id=field_str(p, "messageID"),
                kind=PartKind.CONTENT,
            )
        case "session.status":
            return decode_status(field_str(p, "sessionID"), field_obj(p, "status"))
        case "session.idle":
            return StatusChanged(session_id=field_str(p, "sessionID"), run=SessionRun.IDLE)
        case "session.error":
            session_id = opt_str(p, "sessionID")
            if session_id is None:
                # Errors outside a session (e.g. provider auth at start-up) concern no prompt.
                return Ignored(type=etype, known=True)
            name, message = error_of(p.get("error"))
            return SessionFailed(session_id=session_id, error=name or "Unknown", message=message)
        case "session.deleted":
            deleted = p.get("info")
            sid = opt_str(p, "sessionID") or (
                opt_str(deleted, "id") if isinstance(deleted, dict) else None
            )
            if sid is None:
                raise BadFieldError("sessionID is not a non-empty string")
            return SessionDeleted(session_id=sid)
        case "permission.asked" | "question.asked" | "permission.v2.asked" | "question.v2.asked":
            return HumanAsked(session_id=field_str(p, "sessionID"), request_id=field_str(p, "id"))
        case (
            "permission.replied"
            | "question.replied"
            | "permission.v2.replied"
            | "question.v2.replied"
        ):
            return HumanAnswered(
                session_id=field_str(p, "sessionID"),
                request_id=field_str(p, "requestID"),
                rejected=p.get("reply") == "reject",
            )
        case "question.rejected" | "question.v2.rejected":
            return HumanAnswered(
                session_id=field_str(p, "sessionID"),
                request_id=field_str(p, "requestID"),
                rejected=True,
            )
        case _:
            known = etype in KNOWN_IGNORED or etype.startswith(("session.next.", "tui.", "pty."))
            return Ignored(type=etype, known=known)


def _message(info: Mapping[str, Any], directory: str | None) -> Event:
    role = field_str(info, "role")
    session_id = field_str(info, "sessionID")
    message_id = field_str(info, "id")
    time = field_obj(info, "time")
    if role == "user":
        if "summary" in info:
            # OpenCode re-sends a stored user message with its diff summary after each run; an
            # admission (first or repeated messageID) never carries one.
            return Ignored(type="message.updated", known=True)
        # A time.created that is no usable time (1e300, a 20-digit integer) still stores a
        # prompt: the core times it from its arrival and counts the bad field.
        created = wire_ms(time.get("created"))
        chosen = info.get("model")
        chosen = chosen if isinstance(chosen, dict) else {}
        return PromptAdmitted(
            session_id=session_id,
            message_id=message_id,
            created_at=None if created is None else created / 1000.0,
            directory=directory,
            provider=opt_str(chosen, "providerID"),
            model=opt_str(chosen, "modelID"),
        )
    if role != "assistant":
        raise BadFieldError("unknown role")
    parent_id = field_str(info, "parentID")
    if time.get("completed") is None:
        return ReplyOpened(
            session_id=session_id,
            message_id=message_id,
            parent_id=parent_id,
            provider=opt_str(info, "providerID"),
            model=opt_str(info, "modelID"),
        )
    field_ms(time, "completed")
    error_name, error_message = error_of(info.get("error"))
    return ReplyFinished(
        session_id=session_id,
        message_id=message_id,
        parent_id=parent_id,
        finish=opt_str(info, "finish"),
        error=error_name,
        error_message=error_message,
        provider=opt_str(info, "providerID"),
        model=opt_str(info, "modelID"),
        tokens=tokens_of(info.get("tokens")),
        cost=amount(info.get("cost")),
    )


def tokens_of(value: object) -> Tokens | None:
    """OpenCode's ``tokens`` ``{input, output, reasoning, cache: {read, write}}``; None if absent.

    A count that is no count (negative, a bool, a 400-digit number) reads as 0: usage is
    reporting, and one bad field must not cost the rest.
    """
    if not isinstance(value, dict):
        return None
    cache = value.get("cache")
    cache = cache if isinstance(cache, dict) else {}
    return Tokens(
        input=count(value.get("input")),
        output=count(value.get("output")),
        reasoning=count(value.get("reasoning")),
        cache_read=count(cache.get("read")),
        cache_write=count(cache.get("write")),
    )


def _part(part: Mapping[str, Any]) -> Event:
    session_id = field_str(part, "sessionID")
    message_id = field_str(part, "messageID")
    ptype = field_str(part, "type")
    if ptype == "tool":
        state = field_obj(part, "state")
        status = field_str(state, "status")
        return ToolProgress(
            session_id=session_id,
            message_id=message_id,
            call_id=opt_str(part, "callID") or field_str(part, "id"),
            running=status in ("pending", "running"),
        )
    kind = PartKind.CONTENT if ptype in CONTENT_PARTS else PartKind.STEP
    return ReplyActivity(session_id=session_id, message_id=message_id, kind=kind)


def decode_status(session_id: str, status: Mapping[str, Any]) -> Event:
    stype = field_str(status, "type")
    try:
        run = SessionRun(stype)
    except ValueError:
        raise BadFieldError(f"unknown session status {stype!r}"[:60]) from None
    if run is not SessionRun.RETRY:
        return StatusChanged(session_id=session_id, run=run)
    attempt = status.get("attempt")
    message = status.get("message")
    next_ms = status.get("next")
    next_checked = wire_ms(next_ms)
    if next_ms is not None and next_checked is None:
        raise BadFieldError("status.next is not a usable time")
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
