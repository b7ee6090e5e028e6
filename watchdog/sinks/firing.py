"""The alerts firing now, in one place: the daemon keeps it across reloads, the sinks only render.

A prompt's alert fires with a ``no_response`` or ``inactive`` stall and ends with its resolution
(or, as a safety net, the prompt's completion). A probe's alert fires on a failed probe and ends
when a probe of that server and shape passes, or the server leaves the configuration. ``dropped``
and ``failed`` are final and end by themselves: they are not kept.

A sink added by a reload learns from here what fires now; Alertmanager re-sends from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from watchdog.core.transitions import (
    Completed,
    PromptRef,
    Resolved,
    Stalled,
    StallKind,
    Transition,
)
from watchdog.sinks.alert import describe

FIRING_KINDS = (StallKind.NO_RESPONSE, StallKind.INACTIVE)
DEFAULT_MAX_ACTIVE = 10_000

# server, session, message (empty for a prompt never stored), kind; or ("probe", server, shape)
Identity = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProbeFiring:
    """A failed probe's alert as its owner rendered it (the webhook body, Alertmanager's form)."""

    server: str
    shape: str
    labels: dict[str, str]
    annotations: dict[str, str]
    document: dict[str, Any]
    since: float
    what: str


@dataclass(frozen=True, slots=True)
class Firing:
    """One alert firing now: the stall as it fired (its ref is the one the alert was sent with),
    or a probe's alert."""

    key: Identity
    server: str
    stall: Stalled | None = None
    probe: ProbeFiring | None = None


def identity(ref: PromptRef, kind: StallKind) -> Identity:
    """A prompt alert's identity: the same for its firing and its resolution."""
    return (ref.server, ref.session_id, ref.message_id or "", kind.value)


def probe_identity(server: str, shape: str) -> Identity:
    return ("probe", server, shape)


@dataclass(slots=True)
class FiringAlerts:
    """Every alert firing now, by identity, oldest first; at most ``max_active``.

    Past the cap a new alert is still delivered once by the sinks, but not remembered: it is
    not re-sent, and ``on_untracked`` hears of it (with a log-safe label).
    """

    max_active: int = DEFAULT_MAX_ACTIVE
    on_untracked: Callable[[str], None] = field(default=lambda what: None)
    active: dict[Identity, Firing] = field(default_factory=dict)
    untracked: int = 0

    def note(self, transition: Transition) -> None:
        """Follow one transition (after the sinks have seen it)."""
        if isinstance(transition, Stalled):
            if transition.kind in FIRING_KINDS:
                ref = transition.prompt
                key = identity(ref, transition.kind)
                self._add(Firing(key, ref.server, stall=transition), describe(transition))
        elif isinstance(transition, Resolved):
            self.active.pop(identity(transition.prompt, transition.kind), None)
        elif isinstance(transition, Completed):
            for kind in FIRING_KINDS:
                self.active.pop(identity(transition.prompt, kind), None)

    def fire_probe(self, probe: ProbeFiring) -> None:
        key = probe_identity(probe.server, probe.shape)
        self._add(Firing(key, probe.server, probe=probe), probe.what)

    def resolve(self, key: Identity) -> Firing | None:
        return self.active.pop(key, None)

    def get(self, key: Identity) -> Firing | None:
        return self.active.get(key)

    def of_server(self, server: str) -> list[Firing]:
        return [f for f in self.active.values() if f.server == server]

    def __iter__(self) -> Iterator[Firing]:
        return iter(list(self.active.values()))

    def __len__(self) -> int:
        return len(self.active)

    def _add(self, firing: Firing, what: str) -> None:
        if firing.key in self.active:
            self.active[firing.key] = firing
            return
        if len(self.active) >= self.max_active:
            self.untracked += 1
            self.on_untracked(what)
            return
        self.active[firing.key] = firing
