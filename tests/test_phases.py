"""The prompt's life as data: every (phase, signal) pair is decided, and the docstring's picture
is the table itself."""

from __future__ import annotations

import inspect

from watchdog.core import phases, tracker
from watchdog.core.phases import IGNORED, TABLE, Action, Phase, Signal, diagram


def test_every_pair_is_either_a_transition_or_ignored_with_a_reason() -> None:
    """No pair is left to chance: each is in the table or in IGNORED, never both."""
    for phase in Phase:
        for signal in Signal:
            in_table = signal in TABLE[phase]
            reason = IGNORED.get((phase, signal))
            assert in_table != (reason is not None), (phase, signal)
            assert reason is None or len(reason) > 10, (phase, signal)
    assert set(TABLE) == set(Phase)


def test_rules_are_complete() -> None:
    """An ending names its outcome (or takes the signal's); a stall names its kind; every other
    rule goes to a phase, stays, or (resume) returns to where it was."""
    for phase, rules in TABLE.items():
        for signal, rule in rules.items():
            where = (phase, signal)
            if rule.action is Action.END:
                assert rule.next is None, where
                carried = signal in (Signal.FINISHED, Signal.ERROR)
                assert (rule.ending is None) == carried, where
            elif rule.action is Action.FIRE:
                assert rule.stall is not None, where
            else:
                assert rule.ending is None, where


def test_every_live_phase_can_end_every_way_a_session_ends() -> None:
    """Deleted, evicted: wherever a prompt stands, it can leave (no alert is ever stranded)."""
    for phase in Phase:
        for signal in (Signal.DELETED, Signal.EVICTED):
            assert TABLE[phase][signal].action is Action.END, (phase, signal)


def test_only_the_timed_phases_come_due() -> None:
    """A deadline exists only where a clock runs; queued and blocked prompts have none."""
    timed = {phase for phase, rules in TABLE.items() if Signal.DUE in rules}
    assert timed == {Phase.AWAITING_TURN, Phase.WAITING, Phase.RETRYING, Phase.REPLYING}


def test_the_tracker_docstring_shows_the_table() -> None:
    """The picture in the tracker's docstring is drawn from the table, so they cannot disagree."""
    assert diagram() in (tracker.__doc__ or "")
    pictured = [line.split("─►")[0].split()[-1] for line in diagram().splitlines()]
    assert len(pictured) <= sum(len(rules) for rules in TABLE.values())


def test_the_table_fits_on_one_screen() -> None:
    """The transitions, as written in the source, are read at a glance (under 30 lines)."""
    source = inspect.getsource(phases)
    start = source.index("TABLE: dict[Phase, dict[Signal, Rule]] = {")
    end = source.index("# fmt: on", start)
    assert source[start:end].count("\n") <= 30
