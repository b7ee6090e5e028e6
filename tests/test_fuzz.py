"""Random, truncated and mutated real events never crash the decoder or the tracker, and invariants hold."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES
from watchdog.core.settings import Limits, Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import Accepted, Completed, Resolved, Stalled, Transition
from watchdog.opencode.v1 import decode_line

CAPTURES = [
    [
        line[6:]
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("data: ")
    ]
    for path in sorted(FIXTURES.glob("*/*.event.sse"))
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def mutate(obj: Any, path: list[int], value: Any, delete: bool) -> Any:
    """Replace or delete one nested value chosen by ``path`` (indices modulo the container size)."""
    if not path or not isinstance(obj, dict | list) or not obj:
        return value
    if isinstance(obj, dict):
        key = sorted(obj)[path[0] % len(obj)]
        copy = dict(obj)
        if delete and len(path) == 1:
            del copy[key]
        else:
            copy[key] = mutate(obj[key], path[1:], value, delete)
        return copy
    index = path[0] % len(obj)
    copy_list = list(obj)
    copy_list[index] = mutate(obj[index], path[1:], value, delete)
    return copy_list


def parse(line: str) -> Any:
    """The line's JSON, or an empty object when an earlier edit already broke it."""
    try:
        return json.loads(line)
    except ValueError:
        return {}


@st.composite
def damaged_streams(draw: st.DrawFn) -> list[str]:
    """One to three real captures back to back, then dropped, repeated, swapped, cut and mutated lines."""
    lines = [
        line
        for capture in draw(st.lists(st.sampled_from(CAPTURES), min_size=1, max_size=3))
        for line in capture
    ]
    for _ in range(draw(st.integers(0, 12))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "repeat", "swap", "truncate", "mutate", "garbage"]))
        if how == "drop" and len(lines) > 1:
            del lines[i]
        elif how == "repeat":
            lines.insert(i, lines[i])
        elif how == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        elif how == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif how == "mutate":
            path = draw(st.lists(st.integers(0, 50), min_size=1, max_size=5))
            lines[i] = json.dumps(
                mutate(
                    parse(lines[i]),
                    path,
                    draw(JSON_VALUES),
                    draw(st.booleans()),
                )
            )
        elif how == "garbage":
            lines[i] = draw(st.text(max_size=40))
    return lines


def key(t: Transition) -> tuple[str, str | None, float]:
    return (t.prompt.session_id, t.prompt.message_id, t.prompt.accepted_at)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=damaged_streams(), steps=st.lists(st.floats(0.001, 20), min_size=1, max_size=50))
def test_damaged_streams_keep_the_invariants(lines: list[str], steps: list[float]) -> None:
    """No exception escapes; pending count matches the pending list; each stall fires and resolves at
    most once per prompt; every prompt ends at most once; accepted = ended + pending + evicted."""
    tracker = Tracker("fuzz", Timeouts(5, 5, 30), Limits(sessions=20, prompts=15))
    out: list[Transition] = []
    now = 1_000.0
    for i, line in enumerate(lines):
        now += steps[i % len(steps)]
        decoded = decode_line(line, directory_scoped=True)
        if decoded is not None:
            out += tracker.feed(decoded.event, now)
        out += tracker.tick(now)
        assert tracker.pending_count == len(tracker.pending(now))
    out += tracker.tick(now + 10_000)

    stalls = Counter((key(t), t.kind) for t in out if isinstance(t, Stalled))
    resolutions = Counter((key(t), t.kind) for t in out if isinstance(t, Resolved))
    endings = Counter(key(t) for t in out if isinstance(t, Completed))
    accepted = sum(isinstance(t, Accepted) for t in out)
    assert all(n == 1 for n in stalls.values())
    assert all(n == 1 for n in endings.values())
    assert all(n == 1 and stalls[k] == 1 for k, n in resolutions.items())
    assert accepted == sum(endings.values()) + tracker.pending_count + tracker.evicted_prompts
