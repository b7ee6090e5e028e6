"""The deadline queue, and the tracker's use of it: the same deadlines as walking every prompt."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_fuzz import damaged_streams
from watchdog.core.deadlines import Deadlines
from watchdog.core.events import (
    PartKind,
    PromptAdmitted,
    ReplyActivity,
    ReplyOpened,
    SessionRun,
    StatusChanged,
)
from watchdog.core.settings import Limits, Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Stalled
from watchdog.opencode.v1 import decode_line


def test_earliest_comes_first_and_an_earlier_time_replaces_a_later_one() -> None:
    """peek/pop give the earliest live key; rescheduling earlier moves it, later keeps the earlier."""
    q: Deadlines[str] = Deadlines()
    q.schedule("a", 10.0)
    q.schedule("b", 5.0)
    q.schedule("a", 3.0)
    q.schedule("b", 7.0)  # later than its entry: the entry (5.0) stays
    assert q.peek() == (3.0, "a")
    assert q.pop() == (3.0, "a")
    assert q.pop() == (5.0, "b")
    assert q.pop() is None
    assert len(q) == 0


def test_discarded_keys_never_come_back() -> None:
    """A discarded key is skipped, and may be scheduled again afresh."""
    q: Deadlines[str] = Deadlines()
    q.schedule("a", 1.0)
    q.schedule("b", 2.0)
    q.discard("a")
    assert q.peek() == (2.0, "b")
    q.schedule("a", 1.0)
    assert q.pop() == (1.0, "a")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["schedule", "discard", "pop"]), st.integers(0, 30), st.floats(0, 100)
        ),
        max_size=400,
    )
)
def test_the_queue_matches_a_plain_dict(ops: list[tuple[str, int, float]]) -> None:
    """Against a dict of key -> earliest time, through compactions: same length, same minimum."""
    q: Deadlines[int] = Deadlines()
    model: dict[int, float] = {}
    for op, key, at in ops:
        if op == "schedule":
            q.schedule(key, at)
            model[key] = min(at, model.get(key, at))
        elif op == "discard":
            q.discard(key)
            model.pop(key, None)
        else:
            top = q.pop()
            if model:
                assert top is not None
                assert top[0] == min(model.values())
                assert model.pop(top[1]) == top[0]
            else:
                assert top is None
        assert len(q) == len(model)
        expected = min(model.values(), default=None)
        peeked = q.peek()
        assert (peeked[0] if peeked else None) == expected


def brute_next_deadline(tracker: Tracker) -> float | None:
    """What next_deadline() used to compute: the minimum over every pending prompt."""
    deadlines = [
        d
        for session in tracker._sessions.values()
        for p in session.prompts
        if (d := tracker._deadline(p)) is not None
    ]
    return min(deadlines, default=None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=damaged_streams(),
    steps=st.lists(st.floats(0.001, 20), min_size=1, max_size=50),
    reload_at=st.integers(0, 200),
)
def test_next_deadline_is_the_earliest_over_every_prompt(
    lines: list[str], steps: list[float], reload_at: int
) -> None:
    """After every event, tick and timeout reload, next_deadline() equals the walk over all prompts."""
    tracker = Tracker("fuzz", Timeouts(5, 5, 30), Limits(sessions=20, prompts=15))
    now = 1_000.0
    for i, line in enumerate(lines):
        now += steps[i % len(steps)]
        decoded = decode_line(line, directory_scoped=True)
        if decoded is not None:
            tracker.feed(decoded.event, now)
        assert tracker.next_deadline() == brute_next_deadline(tracker)
        if i == reload_at:
            tracker.set_timeouts(Timeouts(2, 3, 4))
            assert tracker.next_deadline() == brute_next_deadline(tracker)
        tracker.tick(now)
        assert tracker.next_deadline() == brute_next_deadline(tracker)


def test_each_of_many_prompts_stalls_at_its_own_deadline() -> None:
    """Thousands of sessions with deadlines of their own: ticking at next_deadline() fires each
    prompt exactly at its deadline, in deadline order, and replies push only their own later."""
    tracker = Tracker("s", Timeouts(first_response=10, inactivity=4, tool=60))
    for i in range(3000):
        tracker.feed(PromptAdmitted(f"ses_{i}", f"msg_{i}", float(i) / 100), float(i) / 100)
        tracker.feed(StatusChanged(f"ses_{i}", SessionRun.BUSY), float(i) / 100)  # its turn
    # Session 7 replies at t=5: its deadline becomes 5 + 4 = 9, earlier than its first 10.07.
    tracker.feed(ReplyOpened("ses_7", "msg_r7", "msg_7"), 5.0)
    tracker.feed(ReplyActivity("ses_7", "msg_r7", PartKind.CONTENT), 5.0)
    fired: list[tuple[float, str]] = []
    while (deadline := tracker.next_deadline()) is not None:
        for t in tracker.tick(deadline):
            assert isinstance(t, Stalled)
            fired.append((t.at, t.prompt.session_id))
    assert len(fired) == 3000
    assert fired[0] == (9.0, "ses_7")
    assert [at for at, _ in fired] == sorted(at for at, _ in fired)
    assert fired[1] == (10.0, "ses_0")
    assert fired[-1] == (10.0 + 2999 / 100, "ses_2999")
