"""Reads a server's state over REST after (re)connecting, since its event stream replays nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
import structlog

from watchdog.core.events import SessionSnapshot, StatusChanged
from watchdog.io.source import AbsentError, AuthError, ServerApi, StreamError
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


@dataclass(frozen=True, slots=True)
class ReadFailure:
    """One REST read that failed (or a part beyond the reconcile's reach): its part is unknown.

    ``what`` is one of ``status``, ``permission``, ``question``, ``messages``, ``directories``;
    ``where`` the directory (or session) it concerned; ``error`` the cause, safe to log.
    """

    what: str
    where: str | None
    error: str

    @property
    def retried(self) -> bool:
        """Whether reading again can help (a directory past the cap stays past it)."""
        return self.what != "directories"


@dataclass(slots=True)
class Reconciled:
    """What a reconcile read: the snapshots (unknown parts marked None) and what failed."""

    snapshots: list[SessionSnapshot] = field(default_factory=list)
    failures: list[ReadFailure] = field(default_factory=list)


async def read_snapshots(
    api: ServerApi,
    *,
    known_directories: Iterable[str],
    tracked: dict[str, str | None],
    taken_at: float,
    restarted: bool,
) -> list[SessionSnapshot]:
    """The snapshots of ``read_state`` (see there)."""
    return (
        await read_state(
            api,
            known_directories=known_directories,
            tracked=tracked,
            taken_at=taken_at,
            restarted=restarted,
        )
    ).snapshots


async def read_state(
    api: ServerApi,
    *,
    known_directories: Iterable[str],
    tracked: dict[str, str | None],
    taken_at: float,
    restarted: bool,
) -> Reconciled:
    """Snapshots of every running session and every session with a tracked prompt.

    A read that fails says *unknown*, never idle or empty: a session whose directory's
    `/session/status` failed (or lies past the cap of directories) gets ``run`` None, one whose
    `/permission` or `/question` failed gets ``waiting_on`` None, one whose messages failed no
    snapshot at all. Each failure is in ``failures``. Raises ``AuthError`` (nothing else can be
    read then).
    """
    result = Reconciled()
    # The directories of tracked prompts first: they are what a reconcile is for, and must not
    # fall past the cap behind projects nobody works in.
    directories: list[str | None] = [None]
    project_list = await _get(api, "/project", "reconcile.no_project_list", level="info")
    for directory in [
        *tracked.values(),
        *decode_directories(project_list),
        *known_directories,
    ]:
        if directory and directory not in directories:
            directories.append(directory)
    beyond = directories[MAX_DIRECTORIES:]
    if beyond:
        result.failures.append(
            ReadFailure(
                "directories",
                None,
                f"{len(beyond)} directories beyond the reconcile's cap of {MAX_DIRECTORIES}",
            )
        )
    lists = await _read_lists(api, directories[:MAX_DIRECTORIES], result.failures)
    statuses, status_read = lists.statuses, lists.status_read
    waiting, waiting_read = lists.waiting, lists.waiting_read
    targets: dict[str, str | None] = dict(tracked)
    for session_id, (_, directory) in statuses.items():
        targets.setdefault(session_id, directory)
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
                # No snapshot: an idle status without the messages could call a prompt answered
                # meanwhile dropped.
                result.failures.append(ReadFailure("messages", session_id, str(exc)))
                return
        status = statuses.get(session_id)
        result.snapshots.append(
            decode_session_messages(
                session_id,
                body,
                status=status[0] if status else None,
                status_known=status is not None or directory in status_read,
                taken_at=taken_at,
                directory=directory,
                # Listed elsewhere or not, its own directory's lists decide: a partial list
                # would release a request still pending.
                waiting_on=tuple(waiting.get(session_id, ()))
                if directory in waiting_read
                else None,
                restarted=restarted,
            )
        )

    async with anyio.create_task_group() as tg:
        for session_id, directory in list(targets.items())[:MAX_SESSIONS]:
            tg.start_soon(read, session_id, directory)
    return result


@dataclass(slots=True)
class _Lists:
    """The per-directory reads: statuses and pending requests, and the directories read whole."""

    statuses: dict[str, tuple[StatusChanged, str | None]] = field(default_factory=dict)
    status_read: set[str | None] = field(default_factory=set)
    waiting: dict[str, list[str]] = field(default_factory=dict)
    waiting_read: set[str | None] = field(default_factory=set)


async def _read_lists(
    api: ServerApi, directories: list[str | None], failures: list[ReadFailure]
) -> _Lists:
    lists = _Lists()
    for directory in directories:
        try:
            body = await api.get("/session/status", directory=directory)
        except AuthError:
            raise
        except StreamError as exc:
            failures.append(ReadFailure("status", directory, str(exc)))
        else:
            lists.status_read.add(directory)
            for session_id, status in decode_status_map(body).items():
                lists.statuses.setdefault(session_id, (status, directory))
        complete = True
        for what, path in (("permission", "/permission"), ("question", "/question")):
            try:
                listed = decode_waiting(await api.get(path, directory=directory))
            except AbsentError:
                listed = {}  # older servers have no /question: nobody can be asked one
            except AuthError:
                raise
            except StreamError as exc:
                failures.append(ReadFailure(what, directory, str(exc)))
                complete = False
                continue
            for session_id, ids in listed.items():
                lists.waiting.setdefault(session_id, []).extend(ids)
        if complete:
            lists.waiting_read.add(directory)
    return lists


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
