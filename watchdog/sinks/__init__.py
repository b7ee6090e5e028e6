"""Where transitions go: every sink has one method, ``emit``, which must never block or raise."""

from __future__ import annotations

from typing import Protocol

from watchdog.core.transitions import Transition


class Sink(Protocol):
    """Receives every transition the trackers produce, in order."""

    def emit(self, transition: Transition) -> None:
        """Take one transition; slow work (HTTP) is queued, not done here."""
