"""A small ring of the latest stalls and failures, kept for the status page and the demo summary."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from watchdog.core.transitions import Completed, Resolved, Stalled, Transition

DEFAULT_SIZE = 50
MAX_CAUSE = 200  # characters of the server's error shown on the page and in `/status`

# Why each kind is reported, in words for people; an unknown (newer) kind reads as its name.
WHY: dict[str, str] = {
    "no_response": "no model output within the first-response timeout",
    "inactive": "the reply started, then nothing within the inactivity timeout",
    "dropped": "the session went idle and the prompt never got its reply",
    "failed": "the prompt ended with an error and will never be answered",
}


@dataclass(frozen=True, slots=True)
class Incident:
    """One stall or failure of one prompt (ids, times and names; never text)."""

    kind: str
    server: str
    session_id: str
    message_id: str | None  # None for a prompt that failed before OpenCode stored it
    at: float  # when it was reported
    waited: float  # seconds from acceptance to the report
    directory: str | None = None
    provider: str | None = None
    model: str | None = None
    reason: str | None = None
    resolved_at: float | None = None
    outcome: str | None = None  # how the prompt ended, once it did
    error: str | None = None  # the server's error name, for a failure
    error_message: str | None = None  # ... and its message (cut by the decoder)

    @property
    def why(self) -> str:
        """The kind in words."""
        return WHY.get(self.kind, self.kind.replace("_", " "))

    @property
    def cause(self) -> str | None:
        """The server's error as `Name: message`, cut to ``MAX_CAUSE`` characters; None without one."""
        if self.error is None:
            return None
        text = f"{self.error}: {self.error_message}" if self.error_message else self.error
        return text if len(text) <= MAX_CAUSE else text[: MAX_CAUSE - 1] + "…"

    @property
    def firing(self) -> bool:
        """True while its alert stands: neither resolved nor ended (a failure ends at once)."""
        return self.resolved_at is None and self.outcome is None


class RecentIncidents:
    """A sink that remembers the last ``size`` incidents, newest last; memory stays bounded."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._items: deque[Incident] = deque(maxlen=size)
        self.size = size

    def latest(self) -> list[Incident]:
        """Newest first."""
        return list(reversed(self._items))

    def emit(self, transition: Transition) -> None:
        ref = transition.prompt
        match transition:
            case Stalled(kind=kind, at=at, waited=waited, reason=reason, error=error):
                self._items.append(
                    Incident(
                        kind=kind.value,
                        server=ref.server,
                        session_id=ref.session_id,
                        message_id=ref.message_id,
                        at=at,
                        waited=waited,
                        directory=ref.directory,
                        provider=ref.provider,
                        model=ref.model,
                        reason=reason,
                        error=error.name if error else None,
                        error_message=error.message if error else None,
                    )
                )
            case Resolved(kind=kind, at=at, outcome=outcome):
                self._update(
                    ref.server, ref.message_id, kind.value, at, outcome.value if outcome else None
                )
            case Completed(outcome=outcome):
                # A failure is in the list already: the tracker reports it as a `failed` stall.
                for i, item in enumerate(self._items):
                    if (item.server, item.message_id) == (ref.server, ref.message_id) and (
                        item.outcome is None
                    ):
                        self._items[i] = replace(item, outcome=outcome.value)
            case _:
                pass

    def _find(self, server: str, message_id: str | None, kind: str) -> int:
        for i in range(len(self._items) - 1, -1, -1):
            item = self._items[i]
            if (item.server, item.message_id, item.kind) == (server, message_id, kind):
                return i
        return -1

    def _update(
        self, server: str, message_id: str | None, kind: str, at: float, outcome: str | None
    ) -> None:
        i = self._find(server, message_id, kind)
        if i >= 0:
            self._items[i] = replace(self._items[i], resolved_at=at, outcome=outcome)
