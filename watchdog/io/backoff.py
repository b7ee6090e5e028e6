"""Capped exponential backoff with full jitter, for reconnects and alert delivery retries."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delay n is uniform in [0, min(cap, base * 2**n)] ("full jitter"), so many watchdogs that lost
    the same server do not reconnect in lockstep; ``reset()`` after a healthy period."""

    base: float = 1.0
    cap: float = 60.0
    random: Callable[[], float] = field(default=random.random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        ceiling = min(self.cap, self.base * float(2 ** min(self.attempt, 32)))
        self.attempt += 1
        jitter: float = self.random()
        return ceiling * jitter

    def reset(self) -> None:
        """Start again from ``base``."""
        self.attempt = 0
