"""Reads recorded OpenCode SSE streams and replays them through a tracker on the recording's own clock."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from watchdog.decode_v1 import decode_line
from watchdog.events import Event
from watchdog.tracker import Tracker
from watchdog.transitions import Transition

_ID_TIME_DIGITS = 12


@dataclass(frozen=True, slots=True)
class Recorded:
    """One decoded event and when it happened (seconds, from the event id)."""

    at: float
    directory: str | None
    event: Event
    type: str


def event_id_time(event_id: str) -> float | None:
    """The creation time OpenCode encodes in an ascending ``evt_``/``msg_`` id, in seconds.

    The 12 hex digits after the prefix are ``(ms_epoch * 4096 + counter) mod 2**48``, so they give
    the time modulo 2**36 ms (about 795 days): good for differences within one recording.
    """
    _, _, rest = event_id.partition("_")
    try:
        return (int(rest[:_ID_TIME_DIGITS], 16) // 4096) / 1000.0
    except ValueError:
        return None


def read_sse(lines: Iterable[str], *, directory_scoped: bool) -> Iterator[Recorded]:
    """Decode an SSE capture; events without a readable id time take the previous event's time."""
    last = 0.0
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        decoded = decode_line(data, directory_scoped=directory_scoped)
        if decoded is None:
            continue
        at = event_id_time(decoded.event_id) if decoded.event_id else None
        last = at if at is not None else last
        yield Recorded(at=last, directory=decoded.directory, event=decoded.event, type=decoded.type)


def replay(
    tracker: Tracker, recording: Iterable[Recorded], *, until: float | None = None
) -> list[tuple[float, Transition]]:
    """Feed a recording to a tracker, ticking at every deadline in between, as the daemon would.

    ``until`` keeps the clock running after the last event (to let timers expire).
    """
    happened: list[tuple[float, Transition]] = []

    def tick_until(t: float) -> None:
        while (deadline := tracker.next_deadline()) is not None and deadline <= t:
            happened.extend((deadline, tr) for tr in tracker.tick(deadline))

    last = None
    for rec in recording:
        tick_until(rec.at)
        happened.extend((rec.at, tr) for tr in tracker.feed(rec.event, rec.at))
        last = rec.at
    if until is not None and (last is None or until > last):
        tick_until(until)
    return happened
