"""Model-based test: the tracker and a reference judge agree on every prompt of generated lives.

A simulated OpenCode (tests/model/sim.py) lives through random sequences: prompts queued and
folded, multi-step replies with tools, people asked (in sub-agents too), retries, failures,
aborts, deletes, lost prompts, reconnect reads (fresh, stale, or failed) and wall-clock steps.
The tracker sees only the stream; the judge (tests/model/judge.py) sees what really happened.
Both must agree on each prompt's outcome and when it ended, its first response, and which
stalls fired and resolved, to the tick.

``OPENCODE_WATCHDOG_MODEL_EXAMPLES`` sets how many lives are tried (``--hypothesis-profile=long``
or the environment variable for a nightly run).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.model.judge import Verdict, judge, sending
from tests.model.sim import Scenario, scenarios
from watchdog.core.settings import Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import (
    Accepted,
    Completed,
    FirstResponse,
    Resolved,
    Stalled,
    StallKind,
    Transition,
)

# 1 000 lives find each of the reverted fixes of issue 15 (folded prompts' clocks, the queued
# prompts' turn, a wait that pauses folded prompts) from scratch, in about 10 s; a loaded
# Hypothesis profile with more examples (e.g. --hypothesis-profile=long) takes precedence.
EXAMPLES = int(
    os.environ.get("OPENCODE_WATCHDOG_MODEL_EXAMPLES", max(1000, settings().max_examples))
)
TIMEOUTS = st.sampled_from(
    [
        Timeouts(first_response=5.0, inactivity=4.0, tool=15.0, turn_start=12.0),
        Timeouts(first_response=2.5, inactivity=6.0, tool=9.0, turn_start=4.0),
        Timeouts(first_response=30.0, inactivity=30.0, tool=300.0, turn_start=30.0),
    ]
)


def run_tracker(scenario: Scenario, timeouts: Timeouts) -> list[tuple[float, Transition]]:
    """Feed the stream as the daemon does, ticking at every deadline in between."""
    tracker = Tracker("model", timeouts)
    out: list[tuple[float, Transition]] = []

    def tick_until(t: float) -> None:
        while (deadline := tracker.next_deadline()) is not None and deadline <= t:
            out.extend((deadline, tr) for tr in tracker.tick(deadline, scenario.wall(deadline)))

    for t, event in scenario.events:
        tick_until(t)
        out.extend((t, tr) for tr in tracker.feed(event, t, scenario.wall(t)))
    tick_until(scenario.end)
    return out


def verdicts_of(scenario: Scenario, out: list[tuple[float, Transition]]) -> dict[str, Verdict]:
    """The tracker's transitions, read back as verdicts (times monotonic)."""
    found: dict[str, Verdict] = {}
    current: dict[str, str] = {}  # message id -> the key of its latest sending
    for t, tr in out:
        if tr.prompt.message_id is None:
            continue  # a prompt that failed before it was stored: not one of the simulation's
        message = current.get(tr.prompt.message_id, tr.prompt.message_id)
        match tr:
            case Accepted():
                assert found.get(message, Verdict(0.0, outcome="-")).outcome is not None, (
                    f"{message} accepted twice while pending"
                )
                message = current[tr.prompt.message_id] = sending(tr.prompt.message_id, found)
                found[message] = Verdict(arrival=t)
                # People read the wall clock; the monotonic one runs the timers.
                assert tr.prompt.accepted_at == pytest.approx(scenario.wall(t), abs=1e-6)
            case FirstResponse():
                assert found[message].first_response is None, f"{message}: two first responses"
                found[message].first_response = t
            case Stalled(kind=kind):
                if kind in (StallKind.NO_RESPONSE, StallKind.INACTIVE):
                    found[message].stalls.append([kind.value, t, None])
                    assert tr.waited == pytest.approx(t - found[message].arrival, abs=1e-6)
            case Resolved(kind=kind):
                open_ = [s for s in found[message].stalls if s[0] == kind.value and s[2] is None]
                assert len(open_) == 1, f"{message}: resolved {kind} without it firing"
                open_[0][2] = t
            case Completed(outcome=outcome):
                assert found[message].outcome is None, f"{message} ended twice"
                found[message].outcome, found[message].ended = outcome.value, t
    return found


def same(expected: Verdict, got: Verdict) -> bool:
    def close(a: object, b: object) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return abs(a - b) < 1e-6
        return a == b

    return (
        close(expected.arrival, got.arrival)
        and expected.outcome == got.outcome
        and close(expected.ended, got.ended)
        and close(expected.first_response, got.first_response)
        and len(expected.stalls) == len(got.stalls)
        and all(
            all(close(x, y) for x, y in zip(e, g, strict=True))
            for e, g in zip(expected.stalls, got.stalls, strict=True)
        )
    )


def check(scenario: Scenario, timeouts: Timeouts) -> None:
    expected = judge(scenario, timeouts)
    got = verdicts_of(scenario, run_tracker(scenario, timeouts))
    assert set(got) == set(expected), "the tracker and the judge saw different prompts"
    wrong = {m: (expected[m], got[m]) for m in expected if not same(expected[m], got[m])}
    assert not wrong, (
        scenario.describe()
        + "\n"
        + "\n".join(f"{m}:\n  judge:   {e}\n  tracker: {g}" for m, (e, g) in wrong.items())
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios(), timeouts=TIMEOUTS)
def test_the_tracker_agrees_with_the_reference_judge(
    scenario: Scenario, timeouts: Timeouts
) -> None:
    """Every prompt: the same outcome at the same time, the same first response, the same stalls
    fired and resolved at the same ticks."""
    check(scenario, timeouts)
