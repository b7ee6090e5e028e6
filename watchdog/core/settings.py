"""What an operator sets that the core understands: timeouts, memory limits, the probe's shape.

The configuration layer validates these; everything below it takes them as typed values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

DEFAULT_USERNAME = "opencode"  # OpenCode's own default for OPENCODE_SERVER_USERNAME


class ConfigError(ValueError):
    """A setting is missing or malformed; ``str()`` is the one-line message for the operator."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long each phase may stay silent before it is reported (seconds)."""

    first_response: float = 300.0
    inactivity: float = 300.0
    tool: float = 1800.0
    # A prompt stored while its session is idle starts a turn (`busy`) at once; one that starts
    # none within this time was sent with `noReply` and is not a question.
    turn_start: float = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Memory bounds: a flood of sessions or prompts evicts the least recently active."""

    sessions: int = 10_000
    prompts: int = 10_000


class ProbeShape(enum.StrEnum):
    """The `prompt_async` payload a probe sends."""

    CURRENT = "current"  # messageID and part ids, as the web client sends them
    LEGACY = "legacy"  # no ids, with agent and model, as older clients send them


class ApiMode(enum.StrEnum):
    """Which API generation a server is watched with."""

    AUTO = "auto"  # asked at every connect: `GET /api/info` (an OpenCode 2 server says its version)
    V1 = "v1"  # OpenCode 1.x: `/global/event` (or `/event`)
    V2 = "v2"  # OpenCode 2 (`opencode2`): `/api/event`


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One OpenCode server to watch."""

    name: str
    url: str
    username: str = DEFAULT_USERNAME
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None  # PEM bundle to verify the server's certificate (private CA)
    api: ApiMode = field(default_factory=lambda: ApiMode.AUTO)
