"""OpenCode 2's REST, as the watch needs it: which API a server speaks (asked at every connect
in ``api = "auto"``), and what its sessions did while the stream was down.

Detection: `GET /api/info`. An OpenCode 2 server answers ``{"version": "2.0.x", "pid", "urls",
"paths"}`` (``packages/protocol/src/groups/server.ts``); OpenCode 1.18.33 answers 200
``text/html``, its web app's catch-all page (measured against the real 1.18.33), and `/api/health`
there gives ``{"healthy": true}`` with no version, so it cannot tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import structlog

from watchdog.core.events import SessionSnapshot
from watchdog.io.source import AuthError, ProtocolError, ServerApi, StreamError
from watchdog.opencode.v2_rest import (
    api_of_info,
    decode_active,
    decode_inbox,
    decode_messages,
    decode_requests,
    pid_of_info,
    snapshot,
    version_of_info,
)

log = structlog.get_logger("watchdog.v2")

INFO_PATH = "/api/info"
MAX_SESSIONS = 200  # running or tracked sessions read per reconnect; the rest wait for the stream
CONCURRENCY = 4  # requests at once: a reconnect must not hammer a server that just came back
MESSAGE_LIMIT = 50  # the newest messages: enough for the latest prompts and their steps


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What `GET /api/info` told: the API, and for OpenCode 2 its version and process id."""

    api: str
    version: str | None = None
    pid: int | None = None  # a new one after a reconnect: the server restarted


async def detect_api(api: ServerApi) -> ServerInfo:
    """ "v2" with its version and pid when `GET /api/info` says OpenCode 2, else "v1".

    A server that answers anything else (HTML, a 404, JSON without a version of 2 or later) is
    taken for 1.x. Raises ``AuthError`` and transport failures: nothing is known then, and
    connecting would fail the same way.
    """
    try:
        body = await api.get(INFO_PATH, json_only=True)
    except AuthError:
        raise
    except ProtocolError:
        return ServerInfo("v1")
    detected = api_of_info(body)
    if detected is None:
        return ServerInfo("v1")
    return ServerInfo(detected, version_of_info(body), pid_of_info(body))


async def read_snapshots_v2(
    api: ServerApi,
    *,
    tracked: dict[str, str | None],
    taken_at: float,
    restarted: bool,
) -> list[SessionSnapshot]:
    """Snapshots of every running session and every session with a tracked prompt.

    Raises ``AuthError``; other failures leave what they concern unknown (None), never empty.
    """
    active = decode_active(await _get(api, "/api/session/active", "reconcile.v2_active_failed"))
    targets = list(dict.fromkeys([*tracked, *sorted(active or ())]))[:MAX_SESSIONS]
    snapshots: list[SessionSnapshot] = []
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def read(session_id: str) -> None:
        async with limiter:
            base = f"/api/session/{session_id}"
            messages = decode_messages(
                await _get(
                    api,
                    f"{base}/message",
                    "reconcile.v2_messages_failed",
                    params={"order": "desc", "limit": str(MESSAGE_LIMIT)},
                ),
                newest_first=True,
            )
            inbox = decode_inbox(await _get(api, f"{base}/inbox", None))
            waiting = decode_requests(
                await _get(api, f"{base}/permission", "reconcile.v2_permissions_failed")
            )
        prompts = None if messages is None else messages + (inbox or ())
        snapshots.append(
            snapshot(
                session_id,
                running=None if active is None else session_id in active,
                prompts=prompts,
                waiting_on=waiting,
                taken_at=taken_at,
                restarted=restarted,
            )
        )

    async with anyio.create_task_group() as tg:
        for session_id in targets:
            tg.start_soon(read, session_id)
    return snapshots


async def _get(
    api: ServerApi, path: str, problem: str | None, *, params: dict[str, str] | None = None
) -> object | None:
    """GET ``path``, or None when it fails (logged as ``problem``, if given); bad credentials
    stop the whole read."""
    try:
        return await api.get(path, params=params)
    except AuthError:
        raise
    except StreamError as exc:
        if problem is not None:
            log.warning(problem, path=path, error=str(exc))
        return None
