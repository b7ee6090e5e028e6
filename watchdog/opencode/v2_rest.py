"""Reads OpenCode 2's REST answers (``/api/...``): which API a server speaks, and what a session
was doing while the stream was down. Pure: bodies in, typed values out, never raising.

The endpoints (anomalyco/opencode ``packages/protocol/src/groups``): ``GET /api/info``
``{version, pid, urls, paths}``; ``GET /api/session/active`` ``{data: {sessionID: {type:
"running"}}}`` (absent sessions are idle); ``GET /api/session/{id}/message`` ``{data:
[Session.Message.Info], cursor}``; ``GET /api/session/{id}/permission`` ``{data:
[Permission.Request]}``; ``GET /api/session/{id}/inbox`` ``{data: [Session.Inbox.Info]}``
(inputs enqueued and not yet delivered).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from watchdog.core.events import PromptSnapshot, ReplySnapshot, SessionRun, SessionSnapshot
from watchdog.opencode.v2 import API, structured_error
from watchdog.opencode.wire import opt_str, wire_ms

_VERSION = re.compile(r"v?(\d{1,6})\.")
_CONTENT_PARTS = frozenset({"text", "reasoning", "tool"})
_RUNNING_TOOL = frozenset({"streaming", "running"})


def api_of_info(body: object) -> str | None:
    """ "v2" when `GET /api/info` answered as an OpenCode 2 server does (a JSON object whose
    ``version`` is 2 or later); None for anything else (a 1.x server answers its web app's HTML,
    which never gets here as a body)."""
    if not isinstance(body, dict):
        return None
    version = body.get("version")
    if not isinstance(version, str):
        return None
    match = _VERSION.match(version.strip())
    return API if match is not None and int(match.group(1)) >= 2 else None


def version_of_info(body: object) -> str | None:
    """The version `GET /api/info` gives, cut short (for the log)."""
    version = body.get("version") if isinstance(body, dict) else None
    return version[:40] if isinstance(version, str) else None


def pid_of_info(body: object) -> int | None:
    """The server's process id (0 means it has none, as in a worker: no use then)."""
    pid = body.get("pid") if isinstance(body, dict) else None
    usable = isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31
    return pid if usable else None


def decode_active(body: object) -> set[str] | None:
    """The running sessions; None when the answer is not the expected shape."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return None
    return {sid for sid in data if isinstance(sid, str) and sid}


def decode_requests(body: object) -> tuple[str, ...] | None:
    """The ids of pending permission (or form) requests; None when unreadable."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return tuple(
        rid for item in data if isinstance(item, dict) and (rid := opt_str(item, "id")) is not None
    )


def decode_inbox(body: object) -> tuple[PromptSnapshot, ...] | None:
    """User inputs enqueued and not yet delivered, as prompts without replies; None if unreadable."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    prompts = []
    for item in data:
        if not isinstance(item, dict) or item.get("type") not in (None, "user"):
            continue
        input_id = opt_str(item, "id")
        if input_id is not None:
            prompts.append(PromptSnapshot(input_id, _created(item)))
    return tuple(prompts)


def decode_messages(body: object, *, newest_first: bool) -> tuple[PromptSnapshot, ...] | None:
    """The user messages of a session's timeline and, for each, the assistant messages after it
    (OpenCode 2 links a step to the input it answers only by this order); None if unreadable."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    items = list(reversed(data)) if newest_first else data
    prompts: list[tuple[str, float | None, list[ReplySnapshot]]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        mid = opt_str(item, "id")
        if mid is None:
            continue
        if kind == "user":
            prompts.append((mid, _created(item), []))
        elif kind == "assistant" and prompts:
            prompts[-1][2].append(_reply(mid, item))
    return tuple(PromptSnapshot(mid, created, tuple(replies)) for mid, created, replies in prompts)


def snapshot(
    session_id: str,
    *,
    running: bool | None,
    prompts: tuple[PromptSnapshot, ...] | None,
    waiting_on: tuple[str, ...] | None,
    taken_at: float,
    restarted: bool,
) -> SessionSnapshot:
    """One session's read: ``running`` None when the active list could not be read."""
    run = None if running is None else SessionRun.BUSY if running else SessionRun.IDLE
    return SessionSnapshot(
        session_id=session_id,
        run=run,
        taken_at=taken_at,
        prompts=prompts,
        waiting_on=waiting_on,
        restarted=restarted,
    )


def _reply(mid: str, item: Mapping[str, Any]) -> ReplySnapshot:
    time = item.get("time")
    time = time if isinstance(time, dict) else {}
    content = item.get("content")
    parts = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
    error = item.get("error")
    name, message = structured_error(error) if isinstance(error, dict) else (None, None)
    running = tuple(
        tool_id
        for p in parts
        if p.get("type") == "tool"
        and isinstance(state := p.get("state"), dict)
        and state.get("status") in _RUNNING_TOOL
        and (tool_id := opt_str(p, "id")) is not None
    )
    return ReplySnapshot(
        message_id=mid,
        completed=wire_ms(time.get("completed")) is not None or name is not None,
        finish=opt_str(item, "finish"),
        error=name,
        has_content=any(p.get("type") in _CONTENT_PARTS for p in parts),
        error_message=message,
        running_tools=running,
    )


def _created(item: Mapping[str, Any]) -> float | None:
    time = item.get("time")
    ms = wire_ms(time.get("created")) if isinstance(time, dict) else None
    return None if ms is None else ms / 1000.0
