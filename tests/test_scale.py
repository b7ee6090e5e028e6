"""Views of many pending prompts: one-pass summaries and a bounded `/status` list, same answers."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_fuzz import damaged_streams
from watchdog.app.config import Config
from watchdog.app.daemon import Daemon
from watchdog.app.watch import STATUS_PENDING_LIMIT
from watchdog.core.events import PromptAdmitted, SessionRun, StatusChanged
from watchdog.core.settings import Limits, ServerConfig, Timeouts
from watchdog.core.tracker import Tracker
from watchdog.opencode.v1 import decode_line


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=damaged_streams(),
    steps=st.lists(st.floats(0.001, 20), min_size=1, max_size=50),
    limit=st.integers(0, 20),
)
def test_summary_and_limited_listing_agree_with_the_full_listing(
    lines: list[str], steps: list[float], limit: int
) -> None:
    """summary() counts each state as the full listing does; pending(limit) is its oldest part."""
    tracker = Tracker("fuzz", Timeouts(5, 5, 30), Limits(sessions=20, prompts=15))
    now = 1_000.0
    for i, line in enumerate(lines):
        now += steps[i % len(steps)]
        decoded = decode_line(line, directory_scoped=True)
        if decoded is not None:
            tracker.feed(decoded.event, now)
        tracker.tick(now)
        every = tracker.pending(now)
        summary = tracker.summary(now)
        assert {s: n for s, n in summary.counts.items() if n} == Counter(p.state for p in every)
        assert summary.total == tracker.pending_count
        assert summary.oldest_age == max((p.age for p in every), default=0.0)
        assert tracker.pending(now, limit=limit) == every[:limit]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_status_lists_the_oldest_prompts_and_the_total() -> None:
    """With more pending prompts than /status lists, it shows the oldest ones and the full count."""
    daemon = Daemon(Config(servers=(ServerConfig("oc", "http://127.0.0.1:9"),), listen_port=0))
    tracker = daemon.watches[0].tracker
    total = STATUS_PENDING_LIMIT + 25
    for s in range(7):  # each session runs: prompts stored now join its turn
        tracker.feed(StatusChanged(f"ses_{s}", SessionRun.BUSY), 1000.0)
    for i in range(total):
        tracker.feed(PromptAdmitted(f"ses_{i % 7}", f"msg_{i:05}", 1000.0 + i), 1000.0 + i)
    server = daemon.status()["servers"][0]
    assert server["pending_total"] == total
    assert server["pending_listed_max"] == STATUS_PENDING_LIMIT
    listed = [p["message_id"] for p in server["pending"]]
    assert listed == [f"msg_{i:05}" for i in range(STATUS_PENDING_LIMIT)]
