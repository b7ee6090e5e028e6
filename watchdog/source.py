"""The only module that talks HTTP to OpenCode: opens its event stream and yields raw event data.

Transport failures are translated here, once, into ``StreamError`` subclasses; nothing deeper sees
an httpx exception.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from httpx_sse import aconnect_sse

from watchdog.sse import SSESplitter

GLOBAL_PATH = "/global/event"
DIRECTORY_PATH = "/event"


class StreamError(Exception):
    """The stream could not be opened or broke; ``str()`` is safe to log (no credentials)."""


class AuthError(StreamError):
    """401/403: the credentials are wrong; retrying fast will not help."""


class UnreachableError(StreamError):
    """Connection refused, DNS failure, TLS failure, connect timeout."""


class SilentError(StreamError):
    """No bytes within the liveness window: the server or the path to it is stuck."""


class ProtocolError(StreamError):
    """The server answered, but not with an event stream (wrong URL, proxy page, 5xx)."""


class ClosedError(StreamError):
    """The server closed the stream (restart, crash, proxy timeout)."""


class StreamPath(enum.StrEnum):
    """Which endpoint the stream uses."""

    GLOBAL = GLOBAL_PATH  # every project directory of the server, payloads wrapped
    DIRECTORY = DIRECTORY_PATH  # older servers: the server's own directory only


@dataclass(frozen=True, slots=True)
class Chunk:
    """One SSE ``data`` field as received."""

    data: str


class EventSource:
    """Opens OpenCode's event stream, preferring `/global/event` and falling back to `/event`."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, *, max_event_bytes: int | None = None
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self.path = StreamPath.GLOBAL
        self.max_event_bytes = max_event_bytes

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncIterator[Chunk]]:
        """Open the stream; yields an iterator of chunks. Raises ``StreamError``."""
        async with self.connect_batches() as batches:
            yield _one_by_one(batches)

    @asynccontextmanager
    async def connect_batches(self) -> AsyncIterator[AsyncIterator[list[str]]]:
        """Open the stream; yields the events' data, one list per network read."""
        try:
            async with self._open(self.path) as batches:
                yield batches
        except _NotFoundError:
            if self.path is not StreamPath.GLOBAL:
                raise ProtocolError(f"{self._base}{self.path} answered 404") from None
            self.path = StreamPath.DIRECTORY
            async with self._open(self.path) as batches:
                yield batches

    @asynccontextmanager
    async def _open(self, path: StreamPath) -> AsyncIterator[AsyncIterator[list[str]]]:
        url = f"{self._base}{path.value}"
        try:
            async with aconnect_sse(self._client, "GET", url) as source:
                response = source.response
                if response.status_code in (401, 403):
                    raise AuthError(
                        f"{url} answered {response.status_code}: check the username and password"
                    )
                if response.status_code == 404:
                    raise _NotFoundError
                if response.status_code != 200:
                    raise ProtocolError(f"{url} answered HTTP {response.status_code}")
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    raise ProtocolError(
                        f"{url} answered {content_type or 'no content type'}, not an event stream"
                    )
                yield _batches(response, SSESplitter(self.max_event_bytes), url)
        except StreamError:
            raise
        except httpx.HTTPError as exc:
            raise _translate(exc, url) from None


class _NotFoundError(Exception):
    pass


class ServerApi:
    """REST reads of the same server, used to catch up after (re)connecting."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, *, timeout: float = 10.0) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._timeout = timeout

    async def get(
        self, path: str, *, directory: str | None = None, params: dict[str, str] | None = None
    ) -> object:
        """GET a JSON document; raises ``StreamError`` subclasses like the stream does."""
        url = f"{self._base}{path}"
        query = dict(params or {})
        if directory:
            query["directory"] = directory  # REST answers are per project directory
        try:
            response = await self._client.get(url, params=query, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise _translate(exc, url) from None
        if response.status_code in (401, 403):
            raise AuthError(
                f"{url} answered {response.status_code}: check the username and password"
            )
        if response.status_code != 200:
            raise ProtocolError(f"{url} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ProtocolError(f"{url} answered something that is not JSON") from None


async def _batches(
    response: httpx.Response, splitter: SSESplitter, url: str
) -> AsyncIterator[list[str]]:
    """The data of the events each network read completes: one split, not one await per event."""
    try:
        async for raw in response.aiter_bytes():
            batch = splitter.feed(raw)
            if batch:
                yield batch
        batch = splitter.close()
        if batch:
            yield batch
    except httpx.HTTPError as exc:
        raise _translate(exc, url) from None
    raise ClosedError(f"{url}: the server closed the stream")


async def _one_by_one(batches: AsyncIterator[list[str]]) -> AsyncIterator[Chunk]:
    async for batch in batches:
        for data in batch:
            yield Chunk(data=data)


def _translate(exc: httpx.HTTPError, url: str) -> StreamError:
    name = type(exc).__name__
    match exc:
        case httpx.ReadTimeout() | httpx.PoolTimeout():
            return SilentError(f"{url}: no data within the time allowed")
        case httpx.ConnectTimeout():
            return UnreachableError(f"{url}: connect timed out")
        case httpx.ConnectError():
            return UnreachableError(f"{url}: cannot connect ({_reason(exc)})")
        case httpx.RemoteProtocolError():
            return ClosedError(f"{url}: connection broken ({_reason(exc)})")
        case httpx.ReadError() | httpx.NetworkError():
            return ClosedError(f"{url}: connection lost ({name})")
        case _:
            return StreamError(f"{url}: {name}")


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # httpx messages can be long nested reprs; the first line is the useful part.
    return text.splitlines()[0][:200]
