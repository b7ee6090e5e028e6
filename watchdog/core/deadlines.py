"""An earliest-deadline queue with lazy invalidation: O(log n) to schedule, amortised O(1) to peek.

Like asyncio's timer heap, entries are never searched for or removed in place. Scheduling a key
again with an earlier time pushes a new entry and makes the old one stale; ``discard`` makes the
key's entry stale. Stale entries are dropped when they reach the top. A later time is not pushed at
all: the owner re-checks an entry when it comes due (``stale``/``due`` callers recompute the real
deadline and schedule it again), so deadlines that only move later cost nothing.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """Keys with the earliest time at which each must be looked at again."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, tuple[float, int]] = {}  # key -> its one live entry
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def schedule(self, key: K, at: float) -> None:
        """Make sure ``key`` comes due no later than ``at``."""
        live = self._live.get(key)
        if live is not None and live[0] <= at:
            return  # the entry already in the heap comes due first; it will be re-checked then
        seq = next(self._seq)
        self._live[key] = (at, seq)
        heapq.heappush(self._heap, (at, seq, key))
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._live):
            self._compact()

    def discard(self, key: K) -> None:
        """Forget ``key``; its entry is dropped when it reaches the top."""
        self._live.pop(key, None)
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._live):
            self._compact()

    def peek(self) -> tuple[float, K] | None:
        """The earliest live entry, without removing it."""
        heap = self._heap
        while heap:
            at, seq, key = heap[0]
            if self._live.get(key) == (at, seq):
                return at, key
            heapq.heappop(heap)
        return None

    def pop(self) -> tuple[float, K] | None:
        """Remove and return the earliest live entry."""
        top = self.peek()
        if top is not None:
            heapq.heappop(self._heap)
            del self._live[top[1]]
        return top

    def clear(self) -> None:
        """Forget every key."""
        self._heap.clear()
        self._live.clear()

    def _compact(self) -> None:
        self._heap = [(at, seq, key) for key, (at, seq) in self._live.items()]
        heapq.heapify(self._heap)
