"""What OpenCode's ascending ids say: the time an event or message was made."""

from __future__ import annotations

_ID_TIME_DIGITS = 12


def event_time(event_id: str | None, near: float) -> float | None:
    """When the server created an event, from its ascending ``evt_`` id, in seconds since the epoch.

    The 12 hex digits after the prefix are ``(ms_epoch * 4096 + counter) mod 2**48``: the time
    modulo 2**36 ms (about 795 days). ``near`` (our clock) supplies the high bits.
    """
    if event_id is None or not event_id.startswith("evt_"):
        return None
    try:
        low = int(event_id[4:16], 16) // 4096
    except ValueError:
        return None
    near_ms = int(near * 1000)
    wrap = 1 << 36
    # The candidate closest to ``near``: clocks that disagree by less than a year still match.
    ms = near_ms - ((near_ms - low + wrap // 2) % wrap) + wrap // 2
    return ms / 1000.0


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
