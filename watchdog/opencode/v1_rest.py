"""Maps OpenCode 1.x REST answers, read after (re)connecting, to the core's snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watchdog.core.events import (
    PromptSnapshot,
    ReplySnapshot,
    SessionRun,
    SessionSnapshot,
    StatusChanged,
)
from watchdog.opencode.v1 import CONTENT_PARTS, decode_status
from watchdog.opencode.wire import (
    BadFieldError,
    error_of,
    field_obj,
    field_str,
    opt_str,
    wire_ms,
)


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
            event = decode_status(session_id, status)
        except BadFieldError:
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
    waiting_on: tuple[str, ...] | None = (),
    restarted: bool = False,
    status_known: bool = True,
) -> SessionSnapshot:
    """`GET /session/{id}/message` (``[{info, parts}]``, oldest first) as one snapshot.

    ``body`` None means the messages could not be read; ``status`` None with ``status_known``
    means the session was absent from `/session/status` (idle), without it that the status could
    not be read. ``waiting_on`` None: the permission or question read failed. Unknown stays
    unknown in the snapshot. Messages that do not decode are skipped: a snapshot is a best
    effort, the stream is the truth.
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
            role = field_str(info, "role")
            message_id = field_str(info, "id")
            time = field_obj(info, "time")
            if role == "user":
                created = wire_ms(time.get("created"))
                prompts[message_id] = PromptSnapshot(
                    message_id, None if created is None else created / 1000.0
                )
                order.append(message_id)
            elif role == "assistant":
                replies.setdefault(field_str(info, "parentID"), []).append(
                    _reply(info, time, parts)
                )
        except Exception:  # noqa: S112 - a message that does not decode is skipped, never fatal
            continue
    run = status.run if status is not None else (SessionRun.IDLE if status_known else None)
    return SessionSnapshot(
        session_id=session_id,
        run=run,
        taken_at=taken_at,
        prompts=None
        if body is None
        else tuple(
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
    error_name, error_message = error_of(info.get("error"))
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
        message_id=field_str(info, "id"),
        completed=time.get("completed") is not None,
        finish=opt_str(info, "finish"),
        error=error_name,
        error_message=error_message,
        has_content=has_content,
        running_tools=tuple(running),
    )
