"""Background delivery of alert payloads over HTTP, with retries, never blocking the tracker."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import structlog

from watchdog.backoff import Backoff

log = structlog.get_logger("watchdog.outbox")


@dataclass(frozen=True, slots=True)
class Letter:
    """One JSON body to POST; ``what`` describes it for logs (ids and kind, never text)."""

    body: Any
    what: str


ResultCounter = Callable[[str], None]


class Outbox:
    """One queue and one worker per destination, so a dead receiver delays no other.

    A full queue drops the newest letter (counted and logged): the tracker must never wait on
    a receiver.
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
        attempts: int = 5,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.sink = sink
        self.url = url
        # Webhook URLs often carry a token in their path: logs name only scheme, host and port.
        parts = urlsplit(url)
        self.where = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")
        self._client = client
        self._count = count
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._attempts = attempts
        self._backoff = backoff or Backoff(base=1.0, cap=30.0)
        self._sleep = sleep
        self._send, self._receive = anyio.create_memory_object_stream[Letter](max_queue)
        self.in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()

    def put(self, letter: Letter) -> bool:
        """Queue a letter; False (and counted as dropped) when the queue is full."""
        try:
            self._send.send_nowait(letter)
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
        """Deliver letters until cancelled."""
        async with self._receive:
            async for letter in self._receive:
                try:
                    await self._deliver(letter)
                except Exception:
                    # Our bug, not the receiver's: lose this letter, keep the queue going.
                    self._count("failed")
                    log.exception("alert.failed", sink=self.sink, to=self.where, what=letter.what)
                finally:
                    self.in_flight -= 1
                    if not self.in_flight:
                        self._idle.set()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for queued letters (shutdown)."""
        with anyio.move_on_after(grace):
            await self._idle.wait()

    async def _deliver(self, letter: Letter) -> None:
        content = json.dumps(letter.body, separators=(",", ":")).encode()
        self._backoff.reset()
        for attempt in range(1, self._attempts + 1):
            problem = await self._post(content)
            if problem is None:
                self._count("delivered")
                log.debug(
                    "alert.delivered",
                    sink=self.sink,
                    to=self.where,
                    what=letter.what,
                    attempt=attempt,
                )
                return
            if attempt < self._attempts:
                delay = self._backoff.next_delay()
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
            else:
                self._count("failed")
                log.error(
                    "alert.failed",
                    sink=self.sink,
                    to=self.where,
                    what=letter.what,
                    attempts=attempt,
                    problem=problem,
                )

    async def _post(self, content: bytes) -> str | None:
        try:
            response = await self._client.post(self.url, content=content, headers=self._headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if response.status_code >= 300:
            return f"HTTP {response.status_code}"
        return None
