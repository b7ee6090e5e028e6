"""The memory limits pick the same victims as the scans they replace, without scanning."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_fuzz import damaged_streams
from watchdog.core.events import PromptAdmitted, SessionSeen
from watchdog.core.settings import Limits, Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Transition
from watchdog.opencode.v1 import decode_line


class Scanning(Tracker):
    """The limits as they were: scan every session, and every prompt, on each eviction."""

    def _enforce_session_limit(self, keep: str) -> None:
        while len(self._sessions) > self.limits.sessions:
            victim_id = next(
                (sid for sid, s in self._sessions.items() if not s.prompts and sid != keep),
                next(sid for sid in self._sessions if sid != keep),
            )
            victim = self._sessions[victim_id]
            self.evicted_sessions += 1
            self._release_session_requests(victim, self._out, everything=True)
            self._evict(victim.prompts, "session_limit", self._out)
            del self._sessions[victim_id]

    def _enforce_prompt_limit(self, out: list[Transition]) -> None:
        while self._pending > self.limits.prompts:
            oldest = min(
                (p for s in self._sessions.values() for p in s.prompts), key=lambda p: p.accepted
            )
            group = list(oldest.turn.members) if oldest.turn is not None else [oldest]
            self._evict(group, "prompt_limit", out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=damaged_streams(),
    steps=st.lists(st.floats(0.001, 20), min_size=1, max_size=50),
    sessions=st.integers(1, 6),
    prompts=st.integers(1, 6),
)
def test_same_evictions_as_scanning(
    lines: list[str], steps: list[float], sessions: int, prompts: int
) -> None:
    """Real captures, damaged, under tight limits: the same sessions and prompts are kept, and
    the same transitions come out."""
    limits = Limits(sessions=sessions, prompts=prompts)
    fast = Tracker("t", Timeouts(5, 5, 30), limits)
    slow = Scanning("t", Timeouts(5, 5, 30), limits)
    now = 1_000.0
    for i, line in enumerate(lines):
        now += steps[i % len(steps)]
        decoded = decode_line(line, directory_scoped=True)
        if decoded is not None:
            assert fast.feed(decoded.event, now) == slow.feed(decoded.event, now)
        assert fast.tick(now) == slow.tick(now)
        assert list(fast._sessions) == list(slow._sessions)
        assert fast.pending(now) == slow.pending(now)
        assert (fast.evicted_sessions, fast.evicted_prompts) == (
            slow.evicted_sessions,
            slow.evicted_prompts,
        )


def test_many_busy_sessions_then_idle_ones() -> None:
    """With the oldest sessions all busy, new idle sessions evict each other, not the busy ones."""
    tracker = Tracker("t", limits=Limits(sessions=100, prompts=1000))
    for i in range(99):
        tracker.feed(PromptAdmitted(f"ses_busy{i}", f"msg_{i}", 0.0), 1.0)
    for i in range(1000):
        tracker.feed(SessionSeen(f"ses_idle{i}", None), 2.0 + i)
    assert tracker.pending_count == 99
    assert tracker.evicted_sessions == 999
    assert set(tracker._sessions) == {f"ses_busy{i}" for i in range(99)} | {"ses_idle999"}
