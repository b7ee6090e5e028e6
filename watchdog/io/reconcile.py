"""Reads a server's state over REST after (re)connecting, since its event stream replays nothing."""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import structlog

from watchdog.core.events import SessionSnapshot, StatusChanged
from watchdog.io.source import AuthError, ServerApi, StreamError
from watchdog.opencode.v1_rest import (
    decode_directories,
    decode_session_messages,
    decode_status_map,
    decode_waiting,
)

log = structlog.get_logger("watchdog.reconcile")

MAX_DIRECTORIES = 32
MAX_SESSIONS = 200  # busy or tracked sessions read per reconcile; the rest wait for the stream
CONCURRENCY = 4  # requests at once: a reconnect must not hammer a server that just came back
MESSAGE_LIMIT = 20  # the latest messages are enough to find the latest prompts and replies


async def read_snapshots(
    api: ServerApi,
    *,
    known_directories: Iterable[str],
    tracked: dict[str, str | None],
    taken_at: float,
    restarted: bool,
) -> list[SessionSnapshot]:
    """Snapshots of every running session and every session with a tracked prompt.

    Raises ``AuthError`` (nothing else can be read then); other failures skip what they concern.
    """
    directories: list[str | None] = [None]
    directories += decode_directories(
        await _get(api, "/project", "reconcile.no_project_list", level="info")
    )
    for directory in [*known_directories, *tracked.values()]:
        if directory and directory not in directories:
            directories.append(directory)
    statuses: dict[str, tuple[StatusChanged, str | None]] = {}
    waiting: dict[str, list[str]] = {}
    for directory in directories[:MAX_DIRECTORIES]:
        body = await _get(api, "/session/status", "reconcile.status_failed", directory)
        if body is None:
            continue
        for session_id, status in decode_status_map(body).items():
            statuses.setdefault(session_id, (status, directory))
        for path in ("/permission", "/question"):  # older servers have no /question
            for session_id, ids in decode_waiting(await _get(api, path, None, directory)).items():
                waiting.setdefault(session_id, []).extend(ids)
    targets: dict[str, str | None] = dict(tracked)
    for session_id, (_, directory) in statuses.items():
        targets.setdefault(session_id, directory)
    snapshots: list[SessionSnapshot] = []
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def read(session_id: str, directory: str | None) -> None:
        async with limiter:
            try:
                body = await api.get(
                    f"/session/{session_id}/message",
                    directory=directory,
                    params={"limit": str(MESSAGE_LIMIT)},
                )
            except StreamError as exc:
                log.warning("reconcile.messages_failed", session_id=session_id, error=str(exc))
                return
        status = statuses.get(session_id)
        snapshots.append(
            decode_session_messages(
                session_id,
                body,
                status=status[0] if status else None,
                taken_at=taken_at,
                directory=directory,
                waiting_on=tuple(waiting.get(session_id, ())),
                restarted=restarted,
            )
        )

    async with anyio.create_task_group() as tg:
        for session_id, directory in list(targets.items())[:MAX_SESSIONS]:
            tg.start_soon(read, session_id, directory)
    return snapshots


async def _get(
    api: ServerApi,
    path: str,
    problem: str | None,
    directory: str | None = None,
    *,
    level: str = "warning",
) -> object | None:
    """GET ``path``, or None when it fails (logged as ``problem``, if given).

    Bad credentials are the exception: they stop the whole read.
    """
    try:
        return await api.get(path, directory=directory)
    except AuthError:
        raise
    except StreamError as exc:
        if problem is not None:
            getattr(log, level)(problem, directory=directory, error=str(exc))
        return None
