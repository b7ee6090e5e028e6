"""Streams made of the real captures: the event mix of a busy `opencode serve` 1.18.33.

The captures in tests/fixtures/opencode/1.18.33 (`/global/event`, sync duplicates and all) are
played once per simulated session, with every id made unique to its copy, and the copies
interleaved line by line as concurrent sessions are. Text deltas are the one thing a busy server
sends more of than a short capture shows: each is repeated ``deltas`` times.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CAPTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "opencode" / "1.18.33"
SCENARIOS = ("normal", "slow", "permission", "two-prompts-queued-while-busy", "hang-mid")
# ses_/msg_/prt_/evt_/per_/call_ ids: the prefix, 12 hex digits, then letters and digits.
_ID = re.compile(rb"\b(ses|msg|prt|evt|per|call)_([0-9a-f]{12})([0-9A-Za-z]{4,})")
_SKIP = (b'"type":"server.connected"', b'"type":"server.heartbeat"')


@dataclass(frozen=True)
class Stream:
    """The SSE lines (each ``data: ...\\n\\n``) and what they are."""

    lines: list[bytes]
    events: int  # lines the daemon counts (sync duplicates are skipped, not counted)
    deltas: int
    syncs: int

    @property
    def bytes(self) -> int:
        return sum(map(len, self.lines))


def _capture(scenario: str) -> list[bytes]:
    text = (CAPTURES / f"{scenario}.global-event.sse").read_bytes()
    return [
        line + b"\n\n"
        for line in text.split(b"\n")
        if line.startswith(b"data: ") and not any(skip in line for skip in _SKIP)
    ]


def _renamed(lines: list[bytes], copy: int) -> list[bytes]:
    """The capture's lines with every id unique to ``copy`` (same length, same shape)."""
    tag = f"{copy:06x}".encode()

    def rename(m: re.Match[bytes]) -> bytes:
        return m.group(1) + b"_" + m.group(2)[:6] + tag + m.group(3)

    return [_ID.sub(rename, line) for line in lines]


def _interleaved(copies: list[list[bytes]]) -> Iterator[bytes]:
    longest = max(map(len, copies))
    for i in range(longest):
        for lines in copies:
            if i < len(lines):
                yield lines[i]


def busy_server(sessions: int = 400, deltas: int = 8) -> Stream:
    """``sessions`` concurrent sessions, each living one of the captures; deltas repeated."""
    captures = [_capture(s) for s in SCENARIOS]
    copies = []
    for n in range(sessions):
        lines = []
        for line in _renamed(captures[n % len(captures)], n):
            repeat = deltas if b'"type":"message.part.delta"' in line else 1
            lines += [line] * repeat
        copies.append(lines)
    out = list(_interleaved(copies))
    syncs = sum(1 for line in out if b'"payload":{"type":"sync"' in line)
    return Stream(
        lines=out,
        events=len(out) - syncs,
        deltas=sum(1 for line in out if b'"type":"message.part.delta"' in line),
        syncs=syncs,
    )
