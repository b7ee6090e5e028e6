"""The admission probe: posts a prompt the way a client does and checks that OpenCode takes it in.

A probe goes to its own session (one per server and project directory, found again by its title)
and checks, in order: `prompt_async` answers 204; the user message is stored (seen on the stream,
or read back over REST) within a deadline; no `session.error` follows. With ``expect_reply`` it
sends a real prompt (this costs model tokens) and also waits for the assistant's completed answer.
Every HTTP call goes through the injected httpx client.
"""

from __future__ import annotations

import contextlib
import enum
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from watchdog.core.clock import iso
from watchdog.core.events import StreamConnected
from watchdog.core.settings import ProbeShape
from watchdog.io.httperrors import failure_cause
from watchdog.io.source import EventSource, ServerApi, StreamError, StreamPath, auth_error
from watchdog.io.sse import Oversized
from watchdog.opencode.v1 import PROBE_TITLE
from watchdog.opencode.v1_probe import (
    ErrorInfo,
    MessageInfo,
    PartText,
    ProbeLine,
    decode_default_model,
    decode_error_body,
    decode_message_list,
    decode_probe_line,
    decode_session_info,
    decode_session_list,
)
from watchdog.opencode.wire import parse_json

# Sessions titled PROBE_TITLE (defined next to the decoder, which marks them) belong to the probe;
# the daemon keeps them out of its metrics.
# A probe session is replaced (and the old one deleted) once it holds this many messages.
MAX_PROBE_MESSAGES = 500
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_REASON_LIMIT = 300
# A fresh `/global/event` connection on OpenCode 1.18.33 sometimes delivers nothing for its first
# moments although `server.connected` arrived (1 of 12 connections in a measurement; none with a
# 0.3 s pause). The command-line probe waits this long before posting; the daemon's probes use
# its long-lived stream instead.
STREAM_SETTLE = 0.5


class Step(enum.StrEnum):
    """The links of the chain a probe checks, in order."""

    SESSION = "session"  # find or create the probe session
    ACCEPTED = "accepted"  # prompt_async answered 204
    STORED = "stored"  # the user message was stored
    NO_ERROR = "no_error"  # no session.error followed
    REPLY = "reply"  # (expect_reply only) the assistant's answer completed


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """What to send and how long each step may take."""

    shape: ProbeShape = ProbeShape.CURRENT
    agent: str | None = None
    model: str | None = None  # provider/model
    directory: str | None = None
    expect_reply: bool = False
    stored_timeout: float = 10.0
    reply_timeout: float = 120.0
    error_grace: float = 1.0  # how long to listen for a session.error after the message is stored
    connect_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class StepTiming:
    """How long one step took, and whether it held."""

    step: Step
    seconds: float
    ok: bool


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe."""

    server: str
    shape: ProbeShape
    ok: bool
    started_at: float  # seconds since the epoch
    steps: tuple[StepTiming, ...]
    failed_step: Step | None = None
    reason: str | None = None
    session_id: str | None = None
    message_id: str | None = None

    @property
    def seconds(self) -> float:
        """The whole probe's duration."""
        return sum(s.seconds for s in self.steps)

    def line(self) -> str:
        """One line for a terminal, cron mail or CI log."""
        timings = ", ".join(f"{s.step.value} {s.seconds:.3f}s" for s in self.steps)
        where = f"server {self.server}, shape {self.shape.value}"
        if self.ok:
            return f"probe ok ({where}): {timings}; session {self.session_id}"
        step = self.failed_step.value if self.failed_step else "?"
        return f"probe failed at {step} ({where}): {self.reason} [{timings}]"

    def describe(self) -> dict[str, Any]:
        """The `/status` view of this result."""
        return {
            "server": self.server,
            "shape": self.shape.value,
            "ok": self.ok,
            "at": iso(self.started_at),
            "failed_step": self.failed_step.value if self.failed_step else None,
            "reason": self.reason,
            "steps": {s.step.value: round(s.seconds, 3) for s in self.steps},
            "session_id": self.session_id,
            "message_id": self.message_id,
        }


@dataclass(slots=True)
class ProbeSessions:
    """The probe sessions of one server: which ids to keep out of tracking, and which to reuse.

    Inside the daemon the server's watch sets ``stream_up`` and hands the probe sessions' stream
    lines to ``publish``, so a probe listens on the daemon's long-lived stream instead of opening
    one of its own.
    """

    ids: set[str] = field(default_factory=set)
    by_directory: dict[str | None, str] = field(default_factory=dict)
    message_counts: dict[str, int] = field(default_factory=dict)
    stream_up: Callable[[], bool] | None = None
    listeners: list[Callable[[ProbeLine], None]] = field(default_factory=list)

    def publish(self, data: str, *, directory_scoped: bool) -> None:
        """A stream line about a probe session, for the probe that is listening (if any)."""
        if self.listeners:
            line = decode_probe_line(data, directory_scoped=directory_scoped)
            if line is not None:
                for listener in list(self.listeners):
                    listener(line)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.ids

    def add(self, session_id: str) -> None:
        """Mark a session as the probe's."""
        self.ids.add(session_id)

    @staticmethod
    def is_probe_title(title: str | None) -> bool:
        """Whether a session title is the probe's."""
        return title == PROBE_TITLE


async def find_probe_sessions(
    api: ServerApi, directories: list[str | None], sessions: ProbeSessions
) -> None:
    """Mark every probe session in these directories (after a restart, found by title).

    Failures are ignored: the stream's `session.updated` events carry the title too.
    """
    for directory in directories:
        try:
            body = await api.get(
                "/session", directory=directory, params={"search": PROBE_TITLE, "roots": "true"}
            )
        except StreamError:
            continue
        for info in decode_session_list(body):
            if ProbeSessions.is_probe_title(info.title):
                sessions.add(info.session_id)


def opencode_id(prefix: str, now_ms: int, counter: int) -> str:
    """An id in OpenCode's own ascending format: prefix, 12 hex of (ms*4096+counter) mod 2^48, 14 base62."""
    value = (now_ms * 4096 + counter) % 2**48
    return f"{prefix}_{value:012x}" + "".join(secrets.choice(_BASE62) for _ in range(14))


class _StepTimer:
    """Times the steps one after the other."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._mark = monotonic()
        self.steps: list[StepTiming] = []

    def restart(self) -> None:
        self._mark = self._monotonic()

    def done(self, step: Step, ok: bool = True) -> None:
        now = self._monotonic()
        self.steps.append(StepTiming(step, now - self._mark, ok))
        self._mark = now


class _BrokenError(Exception):
    """A step did not hold; ``reason`` is one line, safe to log."""

    def __init__(self, step: Step, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = _one_line(reason)


@dataclass(slots=True)
class _Watch:
    """What the stream has said about the probe's prompt so far."""

    session_id: str
    text: str
    message_id: str | None
    connected: anyio.Event = field(default_factory=anyio.Event)
    changed: anyio.Event = field(default_factory=anyio.Event)
    stored: bool = False
    reply: MessageInfo | None = None
    errors: list[ErrorInfo] = field(default_factory=list)
    stream_error: str | None = None

    def take(self, line: ProbeLine) -> None:
        match line:
            case StreamConnected():
                self.connected.set()
            case PartText(session_id=sid, message_id=mid, text=text) if (
                sid == self.session_id and text == self.text
            ):
                self.message_id = self.message_id or mid  # the legacy shape learns its id here
                self.stored = self.stored or mid == self.message_id
            case MessageInfo(session_id=sid, role="user", message_id=mid) if (
                sid == self.session_id and mid == self.message_id
            ):
                self.stored = True
            case MessageInfo(session_id=sid, role="assistant") if sid == self.session_id:
                self._consider_reply(line)
            case ErrorInfo(session_id=sid) if sid == self.session_id:
                self.errors.append(line)
            case _:
                return
        self.changed.set()

    def _consider_reply(self, info: MessageInfo) -> None:
        if info.parent_id != self.message_id or not self.message_id or not info.completed:
            return
        if info.finish != "tool-calls" or info.error:
            self.reply = info

    async def wait(self, seconds: float) -> None:
        """Until something changes or ``seconds`` pass."""
        with anyio.move_on_after(max(0.0, seconds)):
            await self.changed.wait()
        self.changed = anyio.Event()


class Probe:
    """Probes one server. ``sessions`` is shared with the daemon's watch of the same server."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        server: str,
        *,
        sessions: ProbeSessions | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        request_timeout: float = 10.0,
        max_messages: int = MAX_PROBE_MESSAGES,
    ) -> None:
        self._client = client
        self._max_messages = max_messages
        self._base = base_url.rstrip("/")
        self.server = server
        self.sessions = sessions if sessions is not None else ProbeSessions()
        self._clock = clock
        self._monotonic = monotonic
        self._timeout = request_timeout
        self._counter = 0

    async def run(self, spec: ProbeSpec) -> ProbeResult:
        """One probe; never raises for anything the server or the network does."""
        started_at = self._clock()
        timer = _StepTimer(self._monotonic)
        session_id: str | None = None
        watch: _Watch | None = None
        try:
            try:
                session_id = await self._session(spec.directory)
            except _BrokenError:
                timer.done(Step.SESSION, ok=False)
                raise
            timer.done(Step.SESSION)
            nonce = "".join(secrets.choice(_BASE62) for _ in range(12))
            text = (
                f"opencode-watchdog probe {nonce}: reply with the single word ok."
                if spec.expect_reply
                else f"opencode-watchdog admission probe {nonce} (noReply; ignore it)."
            )
            body, message_id = await self._body(spec, text)
            watch = _Watch(session_id=session_id, text=text, message_id=message_id)
            await self._listening(spec, watch, body, timer)
        except _BrokenError as broken:
            if not timer.steps or timer.steps[-1].ok:
                timer.done(broken.step, ok=False)
            return ProbeResult(
                server=self.server,
                shape=spec.shape,
                ok=False,
                started_at=started_at,
                steps=tuple(timer.steps),
                failed_step=broken.step,
                reason=broken.reason,
                session_id=session_id,
                message_id=watch.message_id if watch else None,
            )
        return ProbeResult(
            server=self.server,
            shape=spec.shape,
            ok=True,
            started_at=started_at,
            steps=tuple(timer.steps),
            session_id=session_id,
            message_id=watch.message_id,
        )

    async def _listening(
        self, spec: ProbeSpec, watch: _Watch, body: dict[str, Any], timer: _StepTimer
    ) -> None:
        """Run the steps while the stream is listened to: the daemon's, or one of our own."""
        shared = self.sessions.stream_up
        if shared is not None:
            if shared():
                watch.connected.set()
            self.sessions.listeners.append(watch.take)
            timer.restart()
            try:
                await self._steps(spec, watch, body, timer.done)
            finally:
                self.sessions.listeners.remove(watch.take)
            return
        broken: _BrokenError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen, watch)
            with anyio.move_on_after(spec.connect_timeout):
                await watch.connected.wait()
                await anyio.sleep(STREAM_SETTLE)
            timer.restart()  # the stream's set-up is not the server's admission
            try:
                await self._steps(spec, watch, body, timer.done)
            except _BrokenError as exc:
                broken = exc  # raised outside the task group, not wrapped in a group
            finally:
                tg.cancel_scope.cancel()
        if broken is not None:
            raise broken

    async def _steps(
        self, spec: ProbeSpec, watch: _Watch, body: dict[str, Any], done: Callable[..., None]
    ) -> None:
        response = await self._request(
            Step.ACCEPTED,
            "POST",
            f"/session/{watch.session_id}/prompt_async",
            spec.directory,
            json=body,
        )
        if response.status_code != 204:
            raise _BrokenError(
                Step.ACCEPTED,
                f"prompt_async answered HTTP {response.status_code}: {_error_text(response)}",
            )
        self.sessions.message_counts[watch.session_id] = (
            self.sessions.message_counts.get(watch.session_id, 0) + 1 + spec.expect_reply
        )
        done(Step.ACCEPTED)
        await self._await_stored(spec, watch)
        done(Step.STORED)
        if spec.expect_reply:
            await self._await_reply(spec, watch)
            done(Step.REPLY)
            return
        deadline = self._monotonic() + spec.error_grace
        while not watch.errors and self._monotonic() < deadline:
            await watch.wait(deadline - self._monotonic())
        if watch.errors:
            raise _BrokenError(Step.NO_ERROR, f"session.error {_error_line(watch.errors[0])}")
        done(Step.NO_ERROR)

    async def _await_stored(self, spec: ProbeSpec, watch: _Watch) -> None:
        deadline = self._monotonic() + spec.stored_timeout
        next_read = self._monotonic() + 1.0
        while not watch.stored:
            if watch.errors:
                raise _BrokenError(
                    Step.STORED,
                    f"nothing stored; the server published session.error "
                    f"{_error_line(watch.errors[0])}",
                )
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                break
            await watch.wait(min(1.0, remaining))
            if not watch.stored and self._monotonic() >= next_read:
                # A stream can miss lines (see STREAM_SETTLE); the stored message is also in REST.
                await self._read_back(spec, watch)
                next_read = self._monotonic() + 1.0
        if not watch.stored:
            await self._read_back(spec, watch)
        if not watch.stored:
            raise _BrokenError(
                Step.STORED,
                f"no user message stored within {spec.stored_timeout:g}s of the 204 "
                f"(not on the stream, not in GET /session/{{id}}/message)",
            )

    async def _await_reply(self, spec: ProbeSpec, watch: _Watch) -> None:
        deadline = self._monotonic() + spec.reply_timeout
        while watch.reply is None and not watch.errors:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                break
            await watch.wait(min(2.0, remaining))
            if watch.reply is None and (not watch.connected.is_set() or watch.stream_error):
                await self._read_back(spec, watch)
        if watch.reply is None and not watch.errors:
            await self._read_back(spec, watch)
        if watch.errors:
            raise _BrokenError(Step.REPLY, f"session.error {_error_line(watch.errors[0])}")
        if watch.reply is None:
            raise _BrokenError(Step.REPLY, f"no completed reply within {spec.reply_timeout:g}s")
        if watch.reply.error:
            raise _BrokenError(Step.REPLY, f"the reply failed with {watch.reply.error}")

    async def _read_back(self, spec: ProbeSpec, watch: _Watch) -> None:
        """GET the session's latest messages and feed them to the watch like stream lines."""
        try:
            response = await self._request(
                Step.STORED,
                "GET",
                f"/session/{watch.session_id}/message",
                spec.directory,
                params={"limit": "10"},
            )
        except _BrokenError:
            return
        if response.status_code != 200:
            return
        for info in decode_message_list(_json(response)):
            for text in info.texts:
                watch.take(PartText(info.session_id, info.message_id, text))
            watch.take(info)

    async def _listen(self, watch: _Watch) -> None:
        source = EventSource(self._client, self._base)
        try:
            async with source.connect() as batches:
                scoped = source.path is StreamPath.DIRECTORY
                async for batch in batches:
                    for data in batch:
                        if isinstance(data, Oversized):
                            continue  # no probe event is anywhere near the cap
                        line = decode_probe_line(data, directory_scoped=scoped)
                        if line is not None:
                            watch.take(line)
        except StreamError as exc:
            watch.stream_error = str(exc)
            watch.changed.set()

    async def _body(self, spec: ProbeSpec, text: str) -> tuple[dict[str, Any], str | None]:
        part: dict[str, Any] = {"type": "text", "text": text}
        body: dict[str, Any] = {"parts": [part]}
        message_id: str | None = None
        if not spec.expect_reply:
            body["noReply"] = True
        model = spec.model
        agent = spec.agent
        if spec.shape is ProbeShape.CURRENT:
            message_id = self._new_id("msg")
            body["messageID"] = message_id
            part["id"] = self._new_id("prt")
        else:
            agent = agent or "build"
            model = model or await self._default_model(spec.directory)
        if agent:
            body["agent"] = agent
        if model:
            provider, _, model_id = model.partition("/")
            body["model"] = {"providerID": provider, "modelID": model_id}
        return body, message_id

    async def _default_model(self, directory: str | None) -> str | None:
        try:
            response = await self._request(Step.ACCEPTED, "GET", "/config", directory)
        except _BrokenError:
            return None
        return decode_default_model(_json(response)) if response.status_code == 200 else None

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return opencode_id(prefix, int(self._clock() * 1000), self._counter)

    async def _session(self, directory: str | None) -> str:
        sessions = self.sessions
        session_id = sessions.by_directory.get(directory)
        if session_id is None:
            session_id = await self._find(directory)
        if session_id is not None and sessions.message_counts.get(session_id, 0) < (
            self._max_messages
        ):
            sessions.by_directory[directory] = session_id
            sessions.add(session_id)
            return session_id
        old = session_id
        response = await self._request(
            Step.SESSION, "POST", "/session", directory, json={"title": PROBE_TITLE}
        )
        info = decode_session_info(_json(response)) if response.status_code == 200 else None
        if info is None:
            raise _BrokenError(
                Step.SESSION,
                f"POST /session answered HTTP {response.status_code}: {_error_text(response)}",
            )
        sessions.add(info.session_id)
        sessions.by_directory[directory] = info.session_id
        sessions.message_counts[info.session_id] = 0
        if old is not None:
            # Replaced because it grew large; a failed delete only leaves an old session behind.
            with contextlib.suppress(_BrokenError):
                await self._request(Step.SESSION, "DELETE", f"/session/{old}", directory)
        return info.session_id

    async def _find(self, directory: str | None) -> str | None:
        response = await self._request(
            Step.SESSION,
            "GET",
            "/session",
            directory,
            params={"search": PROBE_TITLE, "roots": "true"},
        )
        if response.status_code != 200:
            raise _BrokenError(
                Step.SESSION,
                f"GET /session answered HTTP {response.status_code}: {_error_text(response)}",
            )
        found = [s for s in decode_session_list(_json(response)) if s.title == PROBE_TITLE]
        if not found:
            return None
        newest = max(found, key=lambda s: s.updated_at or 0.0)
        messages = await self._request(
            Step.SESSION, "GET", f"/session/{newest.session_id}/message", directory
        )
        body = _json(messages) if messages.status_code == 200 else None
        self.sessions.message_counts[newest.session_id] = len(body) if isinstance(body, list) else 0
        return newest.session_id

    async def _request(
        self,
        step: Step,
        method: str,
        path: str,
        directory: str | None,
        *,
        json: object = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        query = dict(params or {})
        if directory:
            query["directory"] = directory
        url = f"{self._base}{path}"
        try:
            response = await self._client.request(
                method, url, params=query, json=json, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            # Worded as the daemon's stream words it: `http://host:port/session: connection refused`.
            raise _BrokenError(step, f"{method} {url}: {failure_cause(exc)}") from None
        if response.status_code in (401, 403):
            raise _BrokenError(step, str(auth_error(f"{method} {path}", response)))
        return response


def _json(response: httpx.Response) -> object:
    try:
        return parse_json(response.content)
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    text = decode_error_body(_json(response))
    return text or (response.text[:200] if response.text else "empty body")


def _error_line(error: ErrorInfo) -> str:
    return f"{error.name}: {error.message}" if error.message else error.name


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _REASON_LIMIT else flat[: _REASON_LIMIT - 1] + "…"
