"""The only module that talks HTTP to OpenCode: opens its event stream and yields raw event data.

Transport failures are translated here, once, into ``StreamError`` subclasses; nothing deeper sees
an httpx exception.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.to_thread
import httpx

from watchdog.io.chunked import ChunkedError, body_reader
from watchdog.io.httperrors import failure_cause
from watchdog.io.sse import DEFAULT_MAX_EVENT_BYTES, Oversized, SSESplitter
from watchdog.opencode.wire import parse_json

GLOBAL_PATH = "/global/event"
DIRECTORY_PATH = "/event"
API_PATH = "/api/event"  # OpenCode 2 (`opencode2`); 1.18's own experimental one falls silent
# OpenCode answers REST within milliseconds once up; 10 s covers a loaded server.
DEFAULT_HEADERS_TIMEOUT = 10.0
# Message lists carry tool output and attachments (base64 images): a few MB is normal.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
PARSE_IN_THREAD_BYTES = 256 * 1024
_STREAM_HEADERS = {
    "accept": "text/event-stream",
    "cache-control": "no-store",
    "accept-encoding": "identity",
}
_REST_HEADERS = {"accept": "application/json", "accept-encoding": "identity"}


class StreamError(Exception):
    """The stream could not be opened or broke; ``str()`` is safe to log (no credentials)."""


NO_CREDENTIALS_HINT = (
    "no password was given: set OPENCODE_SERVER_PASSWORD, --password-file, or the server's "
    "password_file in the config"
)


def auth_error(url: str, response: httpx.Response) -> AuthError:
    """A 401/403 in words: no password sent at all, or the one sent was refused."""
    if response.status_code == 401 and "authorization" not in response.request.headers:
        return AuthError(
            f"{url} answered 401 (the server asks for a password): {NO_CREDENTIALS_HINT}"
        )
    return AuthError(f"{url} answered {response.status_code}: check the username and password")


class AuthError(StreamError):
    """401/403: the credentials are wrong; retrying fast will not help."""


class UnreachableError(StreamError):
    """Connection refused, DNS failure, TLS failure, connect timeout."""


class SilentError(StreamError):
    """No bytes within the liveness window: the server or the path to it is stuck."""


class ProtocolError(StreamError):
    """The server answered, but not with an event stream (wrong URL, proxy page, 5xx)."""


class AbsentError(ProtocolError):
    """404 from a REST read: the server has no such endpoint (an older version) or object."""


class ClosedError(StreamError):
    """The server closed the stream (restart, crash, proxy timeout)."""


class StreamPath(enum.StrEnum):
    """Which endpoint the stream uses."""

    GLOBAL = GLOBAL_PATH  # every project directory of the server, payloads wrapped
    DIRECTORY = DIRECTORY_PATH  # older servers: the server's own directory only
    API = API_PATH  # OpenCode 2: every directory, each event carrying its location


Batch = list[str | Oversized]  # what one network read finished: events' data, and skips


class EventSource:
    """Opens OpenCode's event stream: for 1.x, `/global/event`, falling back to `/event`; for
    OpenCode 2 (``use_api("v2")``), `/api/event`, whose keep-alive comments it passes on."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        headers_timeout: float = DEFAULT_HEADERS_TIMEOUT,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self.path = StreamPath.GLOBAL
        self.max_event_bytes = max_event_bytes
        self.headers_timeout = headers_timeout

    def use_api(self, api: str) -> None:
        """Follow the stream of API generation ``api`` ("v1" or "v2") from the next connect."""
        if api == "v2":
            self.path = StreamPath.API
        elif self.path is StreamPath.API:
            self.path = StreamPath.GLOBAL

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncIterator[Batch]]:
        """Open the stream; yields the events' data, one batch per network read (one await per
        read, not per event). Raises ``StreamError``."""
        if self.path is StreamPath.API:
            try:
                async with self._open(self.path) as batches:
                    yield batches
            except _NotFoundError:
                raise ProtocolError(
                    f"{self._base}{API_PATH} answered 404 (is this an OpenCode 2 server?)"
                ) from None
            return
        try:
            async with self._open(self.path) as batches:
                yield batches
        except _NotFoundError:
            if self.path is not StreamPath.GLOBAL:
                self.path = StreamPath.GLOBAL  # a fixed proxy or base URL is found next time
                raise ProtocolError(f"{self._base}{DIRECTORY_PATH} answered 404") from None
            self.path = StreamPath.DIRECTORY
            try:
                async with self._open(self.path) as batches:
                    yield batches
            except _NotFoundError:
                self.path = StreamPath.GLOBAL
                raise ProtocolError(
                    f"{self._base}: both {GLOBAL_PATH} and {DIRECTORY_PATH} answered 404"
                    " (check the server URL and any proxy in front of it)"
                ) from None

    @asynccontextmanager
    async def _open(self, path: StreamPath) -> AsyncIterator[AsyncIterator[Batch]]:
        url = f"{self._base}{path.value}"
        try:
            async with AsyncExitStack() as stack:
                try:
                    # A server still booting may accept the connection and send no headers for
                    # a long time: that wait gets its own short limit, not the liveness window.
                    with anyio.fail_after(self.headers_timeout):
                        response = await stack.enter_async_context(
                            self._client.stream("GET", url, headers=_STREAM_HEADERS)
                        )
                except TimeoutError:
                    raise SilentError(
                        f"{url}: no response headers within {self.headers_timeout:g} s"
                    ) from None
                if response.status_code in (401, 403):
                    raise auth_error(url, response)
                if response.status_code == 404:
                    raise _NotFoundError
                if response.status_code != 200:
                    raise ProtocolError(f"{url} answered HTTP {response.status_code}")
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    raise ProtocolError(
                        f"{url} answered {content_type or 'no content type'}, not an event stream"
                    )
                _refuse_compressed(response, url)
                # Many chunks per network read when the connection allows it (io/chunked.py),
                # else through httpx, a chunk at a time.
                body = body_reader(response) or response.aiter_raw()
                splitter = SSESplitter(self.max_event_bytes, comments=path is StreamPath.API)
                yield _batches(body, url, splitter)
        except StreamError:
            raise
        except httpx.HTTPError as exc:
            raise _translate(exc, url) from None


class _NotFoundError(Exception):
    pass


class TooLargeError(ProtocolError):
    """A REST answer larger than the cap; it was not read to its end."""


class ServerApi:
    """REST reads of the same server, used to catch up after (re)connecting."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        on_too_large: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self.max_body_bytes = max_body_bytes
        self._on_too_large = on_too_large

    async def get(
        self,
        path: str,
        *,
        directory: str | None = None,
        params: dict[str, str] | None = None,
        json_only: bool = False,
    ) -> object:
        """GET a JSON document; raises ``StreamError`` subclasses like the stream does.

        ``json_only``: an answer that does not say it is JSON is refused (``ProtocolError``)
        before its body is read (a web app's page, an endless event stream).
        """
        url = f"{self._base}{path}"
        query = dict(params or {})
        if directory:
            query["directory"] = directory  # REST answers are per project directory
        try:
            # A server dribbling its answer byte by byte must not hold reconcile forever.
            with anyio.fail_after(3 * self._timeout):
                body = await self._read(url, query, json_only)
        except TimeoutError:
            raise SilentError(f"{url}: no complete answer within {3 * self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise _translate(exc, url) from None
        try:
            if len(body) > PARSE_IN_THREAD_BYTES:
                # Parsing megabytes takes long enough to stall the event loop's other servers.
                return await anyio.to_thread.run_sync(parse_json, body)
            return parse_json(body)
        except ValueError:
            raise ProtocolError(f"{url} answered something that is not JSON") from None

    async def _read(self, url: str, query: dict[str, str], json_only: bool = False) -> bytes:
        async with self._client.stream(
            "GET", url, params=query, headers=_REST_HEADERS, timeout=self._timeout
        ) as response:
            if response.status_code in (401, 403):
                raise auth_error(url, response)
            if response.status_code == 404:
                raise AbsentError(f"{url} answered HTTP 404")
            if response.status_code != 200:
                raise ProtocolError(f"{url} answered HTTP {response.status_code}")
            content_type = response.headers.get("content-type", "")
            if json_only and "json" not in content_type.lower():
                raise ProtocolError(f"{url} answered {content_type or 'no content type'}")
            _refuse_compressed(response, url)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise self._too_large(url)
            body = bytearray()
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) > self.max_body_bytes:
                    raise self._too_large(url)
            return bytes(body)

    def _too_large(self, url: str) -> TooLargeError:
        self._on_too_large()
        return TooLargeError(f"{url} answered more than {self.max_body_bytes} bytes; skipped")


def _refuse_compressed(response: httpx.Response, url: str) -> None:
    # We ask for identity: a compressed answer could inflate far past any cap in one chunk.
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ProtocolError(f"{url} answered with content-encoding {encoding}; expected none")


async def _batches(
    raw: AsyncIterator[bytes], url: str, splitter: SSESplitter
) -> AsyncIterator[Batch]:
    try:
        async for piece in raw:
            if batch := splitter.feed(piece):
                yield batch
        if batch := splitter.close():
            yield batch
    except httpx.HTTPError as exc:
        raise _translate(exc, url) from None
    except ChunkedError as exc:
        raise ClosedError(f"{url}: broken chunked framing ({exc})") from None
    raise ClosedError(f"{url}: the server closed the stream")


def _translate(exc: httpx.HTTPError, url: str) -> StreamError:
    name = type(exc).__name__
    match exc:
        case httpx.ReadTimeout() | httpx.PoolTimeout():
            return SilentError(f"{url}: no data within the time allowed")
        case httpx.ConnectTimeout():
            return UnreachableError(f"{url}: connect timed out")
        case httpx.ConnectError():
            return UnreachableError(f"{url}: {failure_cause(exc)}")
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
