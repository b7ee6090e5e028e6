"""The tracker's input vocabulary: what happened on an OpenCode server, independent of its wire format."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SessionRun(enum.StrEnum):
    """What `session.status` says a session's loop is doing."""

    BUSY = "busy"
    RETRY = "retry"
    IDLE = "idle"


class PartKind(enum.StrEnum):
    """Kinds of assistant message parts the tracker cares about."""

    CONTENT = "content"  # text, reasoning, tool call: the model said something
    STEP = "step"  # step-start / step-finish / patch / snapshot: bookkeeping, activity only


class Origin(enum.StrEnum):
    """Where an event came from: the live stream, or a REST read after (re)connecting."""

    LIVE = "live"
    RECONCILED = "reconciled"


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """The server greeted a new stream connection (`server.connected`)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A keep-alive (`server.heartbeat`)."""


@dataclass(frozen=True, slots=True)
class SessionSeen:
    """A session was created or changed; ``parent_session_id`` is set for child (sub-agent) sessions."""

    session_id: str
    parent_session_id: str | None
    directory: str | None = None
    probe: bool = False  # titled as the admission probe's own session (kept out of tracking)


@dataclass(frozen=True, slots=True)
class PromptAdmitted:
    """A user message was stored (or stored again: a repeated messageID changes ``created_at``).

    ``created_at`` is None when the server's time for it is no usable time (a number beyond any
    date, say): the prompt is still a prompt, timed from its arrival.
    """

    session_id: str
    message_id: str
    created_at: float | None  # server time, seconds since the epoch
    directory: str | None = None
    origin: Origin = Origin.LIVE
    provider: str | None = None  # the model the prompt asked for (its reply may say otherwise)
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyOpened:
    """An assistant message exists for ``parent_id``; OpenCode creates it before the model says anything."""

    session_id: str
    message_id: str
    parent_id: str
    provider: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Tokens:
    """What one assistant message cost in tokens, by type (OpenCode's ``tokens``)."""

    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0


@dataclass(frozen=True, slots=True)
class ReplyFinished:
    """An assistant message got ``time.completed``; ``finish`` and ``error`` say how.

    ``tokens`` and ``cost`` are what that message (one step of a reply) used, when the server said.
    """

    session_id: str
    message_id: str
    parent_id: str
    finish: str | None
    error: str | None  # the error's name, e.g. MessageAbortedError
    error_message: str | None = None
    provider: str | None = None
    model: str | None = None
    tokens: Tokens | None = None
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class ReplyActivity:
    """A part of a message was created, changed or streamed (a delta)."""

    session_id: str
    message_id: str
    kind: PartKind


@dataclass(frozen=True, slots=True)
class ToolProgress:
    """A tool part changed state; ``running`` is true while the tool works."""

    session_id: str
    message_id: str
    call_id: str
    running: bool


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """`session.status` / `session.idle`. ``busy`` is a level: it is re-sent at every loop step."""

    session_id: str
    run: SessionRun
    attempt: int | None = None
    retry_message: str | None = None
    next_retry_at: float | None = None  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """`session.error`: the running prompt failed, or a prompt failed before it was stored.

    ``error`` is the error's name, ``message`` the server's text for it (cut short).
    """

    session_id: str
    error: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class SessionDeleted:
    """`session.deleted`: the session and whatever it was doing are gone."""

    session_id: str


@dataclass(frozen=True, slots=True)
class HumanAsked:
    """A permission or question request: the session now waits for a person, not for the model."""

    session_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class HumanAnswered:
    """A permission or question request was replied to; ``rejected`` when the person said no."""

    session_id: str
    request_id: str
    rejected: bool = False


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed event the tracker has no use for (heartbeat-like noise, unknown types)."""

    type: str
    known: bool


@dataclass(frozen=True, slots=True)
class Malformed:
    """An event that could not be decoded; ``reason`` names what was wrong, never the content."""

    type: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplySnapshot:
    """An assistant message as a REST read shows it."""

    message_id: str
    completed: bool
    finish: str | None
    error: str | None
    has_content: bool
    error_message: str | None = None
    running_tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PromptSnapshot:
    """A user message and its replies as a REST read shows them, oldest reply first."""

    message_id: str
    created_at: float | None  # None: no usable time (timed from when it was found)
    replies: tuple[ReplySnapshot, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A session read over REST after (re)connecting: events are not replayed, so this fills the gap.

    A snapshot says what it knows. ``None`` is *unknown*, never empty: ``run`` when the status
    read failed (or the session's directory was beyond the reconcile's reach), ``waiting_on`` when
    the permission or question read failed, ``prompts`` when the messages could not be read. The
    core changes nothing it cannot know.

    ``taken_at`` is when the read began, on the caller's (monotonic) clock: prompts accepted later
    are newer than the snapshot, and whatever the stream said of the session after it wins.
    ``restarted`` says the stream had broken before, so prompts lost meanwhile died with the server.
    """

    session_id: str
    run: SessionRun | None
    taken_at: float
    prompts: tuple[PromptSnapshot, ...] | None = ()
    directory: str | None = None
    attempt: int | None = None
    retry_message: str | None = None
    next_retry_at: float | None = None
    waiting_on: tuple[str, ...] | None = ()  # pending permission/question request ids
    restarted: bool = False


Event = (
    StreamConnected
    | Heartbeat
    | SessionSeen
    | PromptAdmitted
    | ReplyOpened
    | ReplyFinished
    | ReplyActivity
    | ToolProgress
    | StatusChanged
    | SessionFailed
    | SessionDeleted
    | HumanAsked
    | HumanAnswered
    | SessionSnapshot
    | Ignored
    | Malformed
)
