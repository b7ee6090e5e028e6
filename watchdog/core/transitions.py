"""The tracker's output vocabulary: what became of a prompt."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from watchdog.core.events import Tokens


class Outcome(enum.StrEnum):
    """How a prompt ended."""

    ANSWERED = "answered"
    FAILED = "failed"
    ABORTED = "aborted"
    DROPPED = "dropped"
    NO_REPLY = "no_reply"  # stored without starting a turn (`noReply: true`): not a question
    # The watchdog stopped watching it (a memory limit, or its server left the configuration):
    # its alerts are resolved, and nothing more is known of it.
    EVICTED = "evicted"


class StallKind(enum.StrEnum):
    """Why a prompt is reported."""

    NO_RESPONSE = "no_response"  # nothing from the model within the first-response timeout
    INACTIVE = "inactive"  # the reply started, then went quiet
    DROPPED = "dropped"  # the session went idle and the prompt never got a reply
    FAILED = "failed"  # the prompt ended in an error other than an abort; final, never resolved


class PromptState(enum.StrEnum):
    """What a pending prompt is doing now (the `state` label of the pending gauge): its phase, or
    ``stalled`` while one of its stalls fires."""

    AWAITING_TURN = "awaiting_turn"
    QUEUED = "queued"
    WAITING = "waiting"
    RETRYING = "retrying"
    REPLYING = "replying"
    BLOCKED = "blocked"
    STALLED = "stalled"


@dataclass(frozen=True, slots=True)
class Retry:
    """The provider retry OpenCode is in (`session.status` type retry)."""

    attempt: int | None
    message: str | None
    next_at: float | None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The server's error for a failed prompt: its name and (cut) message."""

    name: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class PromptRef:
    """Identifies a prompt and carries what an alert should say about it (never its text)."""

    server: str
    session_id: str
    message_id: str | None  # None for a prompt that failed before OpenCode stored it
    accepted_at: float  # seconds since the epoch
    directory: str | None = None
    parent_session_id: str | None = None
    provider: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A new prompt is being tracked."""

    prompt: PromptRef
    at: float


@dataclass(frozen=True, slots=True)
class FirstResponse:
    """The model said its first thing for this prompt.

    ``latency`` runs from acceptance; ``since_turn`` from the start of its turn (the provider's
    share: a prompt queued behind another waited for that one first).
    """

    prompt: PromptRef
    at: float
    latency: float
    since_turn: float


@dataclass(frozen=True, slots=True)
class Stalled:
    """A stall fired (once per kind per prompt)."""

    prompt: PromptRef
    kind: StallKind
    at: float
    waited: float  # seconds since acceptance
    retry: Retry | None = None
    reason: str | None = None
    error: ErrorInfo | None = None  # set for kind failed


@dataclass(frozen=True, slots=True)
class Resolved:
    """A fired stall is over: the reply came, completed, or the prompt was aborted."""

    prompt: PromptRef
    kind: StallKind
    at: float
    waited: float
    outcome: Outcome | None = None  # set when the prompt ended at the same moment


@dataclass(frozen=True, slots=True)
class Completed:
    """The prompt ended and is forgotten."""

    prompt: PromptRef
    outcome: Outcome
    at: float
    duration: float
    reason: str | None = None  # e.g. the error name, "idle_without_reply"


@dataclass(frozen=True, slots=True)
class Usage:
    """One assistant message (a step of a reply) completed, using these tokens and this cost."""

    prompt: PromptRef
    at: float
    provider: str | None
    model: str | None
    tokens: Tokens | None
    cost: float | None


Transition = Accepted | FirstResponse | Stalled | Resolved | Completed | Usage
