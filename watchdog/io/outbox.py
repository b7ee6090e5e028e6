"""Background delivery of alert payloads over HTTP, with retries, never blocking the tracker."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import structlog

from watchdog.io.backoff import Backoff
from watchdog.io.httperrors import failure_cause

log = structlog.get_logger("watchdog.outbox")


@dataclass(frozen=True, slots=True)
class Letter:
    """One JSON body to POST; ``what`` describes it for logs (ids and kind, never text)."""

    body: Any
    what: str


ResultCounter = Callable[[str], None]

# A receiver that restarts, or a network that flaps, for a few minutes loses nothing.
DEFAULT_RETRY_FOR = 600.0
# While shutting down, retries come this quickly: the grace period is short.
HURRY_DELAY = 0.25


class Outbox:
    """One queue and one worker per destination, so a dead receiver delays no other.

    A letter is retried with capped backoff for ``retry_for`` seconds from when it was queued (a
    receiver restarting for a minute loses nothing). A full queue drops the newest letter
    (counted and logged): the tracker must never wait on a receiver. At shutdown ``flush()``
    gives what is queued a grace period, then ``abandon()`` counts what was not delivered.
    """

    def __init__(
        self,
        sink: str,
        url: str,
        client: httpx.AsyncClient,
        *,
        count: ResultCounter,
        headers: dict[str, str] | None = None,
        max_queue: int = 1000,
        retry_for: float = DEFAULT_RETRY_FOR,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.url = url
        # Webhook URLs often carry a token in their path: logs name only scheme, host and port.
        parts = urlsplit(url)
        self.where = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")
        self._client = client
        self._count = count
        self._headers = {"content-type": "application/json", **(headers or {})}
        self.retry_for = retry_for
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._sleep = sleep
        self._clock = clock
        self._send, self._receive = anyio.create_memory_object_stream[_Queued](max_queue)
        self._current: _Queued | None = None  # taken from the queue, not yet settled
        self._down: str | None = None  # the last failure, while the receiver is failing
        self._hurry = False
        self.in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()

    def put(self, letter: Letter) -> bool:
        """Queue a letter; False (and counted as dropped) when the queue is full."""
        try:
            self._send.send_nowait(_Queued(letter, self._clock()))
        except anyio.WouldBlock:
            self._count("dropped")
            log.error(
                "alert.dropped",
                sink=self.sink,
                to=self.where,
                what=letter.what,
                reason="queue full",
            )
            return False
        self.in_flight += 1
        if self._idle.is_set():
            self._idle = anyio.Event()
        return True

    async def run(self) -> None:
        """Deliver letters until cancelled; may be run again (at shutdown) after a cancel."""
        while True:
            if self._current is None:
                self._current = await self._receive.receive()
            try:
                await self._deliver(self._current)
            except Exception:
                # Our bug, not the receiver's: lose this letter, keep the queue going.
                self._count("failed")
                log.exception(
                    "alert.failed", sink=self.sink, to=self.where, what=self._current.letter.what
                )
            self._current = None
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for queued letters, retrying without long pauses."""
        self._hurry = True
        with anyio.move_on_after(grace):
            await self._idle.wait()

    def abandon(self) -> int:
        """Give up on what is still queued (shutdown): logged and counted as undelivered."""
        lost = self.in_flight
        if lost:
            for _ in range(lost):
                self._count("undelivered")
            log.error(
                "alert.undelivered",
                sink=self.sink,
                to=self.where,
                count=lost,
                problem=self._down,
                reason="shutting down",
            )
        return lost

    async def _deliver(self, queued: _Queued) -> None:
        letter = queued.letter
        content = json.dumps(letter.body, separators=(",", ":"), allow_nan=False).encode()
        deadline = queued.at + self.retry_for
        if self._down is not None and self._clock() >= deadline and not self._hurry:
            # It waited its whole retry window behind letters to a receiver that is still down.
            self._fail(letter, self._down, attempts=0)
            return
        self._backoff.reset()
        attempt = 0
        while True:
            attempt += 1
            problem = await self._post(content)
            if problem is None:
                self._down = None
                self._count("delivered")
                log.debug(
                    "alert.delivered",
                    sink=self.sink,
                    to=self.where,
                    what=letter.what,
                    attempt=attempt,
                )
                return
            self._down = problem
            left = deadline - self._clock()
            if left <= 0 and not self._hurry:
                self._fail(letter, problem, attempts=attempt)
                return
            delay = self._backoff.next_delay()
            delay = min(delay, HURRY_DELAY) if self._hurry else min(delay, left)
            log.warning(
                "alert.retrying",
                sink=self.sink,
                to=self.where,
                what=letter.what,
                attempt=attempt,
                problem=problem,
                retry_in=round(delay, 2),
            )
            self._count("retried")
            await self._sleep(delay)

    def _fail(self, letter: Letter, problem: str, *, attempts: int) -> None:
        self._count("failed")
        log.error(
            "alert.failed",
            sink=self.sink,
            to=self.where,
            what=letter.what,
            attempts=attempts,
            problem=problem,
            reason=f"not delivered within {self.retry_for:g} s",
        )

    async def _post(self, content: bytes) -> str | None:
        try:
            response = await self._client.post(self.url, content=content, headers=self._headers)
        except httpx.HTTPError as exc:
            return failure_cause(exc)
        if response.status_code >= 300:
            return f"HTTP {response.status_code}"
        return None


@dataclass(frozen=True, slots=True)
class _Queued:
    letter: Letter
    at: float  # when it was queued (monotonic)
