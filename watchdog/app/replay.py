"""Reads recorded OpenCode streams (SSE captures, `run --record` files) and replays them through a
server's core on the recording's own clock: what the daemon reported, or would have with other
timeouts. It is the same core the daemon runs, fed the same lines the same way."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from watchdog.core.events import Event
from watchdog.core.server import ServerCore
from watchdog.core.settings import Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import (
    Accepted,
    Completed,
    FirstResponse,
    Outcome,
    Stalled,
    Transition,
)
from watchdog.io.record import DEFAULT_KEEP, snapshot_from_json
from watchdog.opencode.ids import event_id_time
from watchdog.opencode.v1 import V1Stream, decode_line
from watchdog.opencode.v2 import EVENT_PATH as V2_STREAM
from watchdog.opencode.v2 import V2Stream
from watchdog.opencode.wire import parse_json


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded line (or REST snapshot) and when it arrived.

    ``at`` is wall seconds (from the event id in an SSE capture), ``mono`` the daemon's monotonic
    clock when the recording has it (else ``at``). ``data`` is the line as the daemon fed it to
    its core; ``event`` is that line decoded, for whoever inspects a recording.
    """

    at: float
    directory: str | None
    event: Event
    type: str
    server: str = ""
    data: str | None = None  # None for a snapshot
    scoped: bool = True  # read from a per-directory `/event` stream
    mono: float | None = None
    api: str = "v1"  # "v2": read from OpenCode 2's `/api/event`

    @property
    def now(self) -> float:
        """The monotonic time it arrived."""
        return self.at if self.mono is None else self.mono


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
        yield Recorded(
            at=last,
            directory=decoded.directory,
            event=decoded.event,
            type=decoded.type,
            data=data,
            scoped=directory_scoped,
        )


def read_sse_v2(lines: Iterable[str]) -> Iterator[Recorded]:
    """Decode an OpenCode 2 `/api/event` capture: times from ``created`` (a line without one takes
    the previous line's), a comment line as the heartbeat it is."""
    wire = V2Stream()
    last = 0.0
    for line in lines:
        if line.startswith(":"):
            data = ""
        elif line.startswith("data:"):
            data = line[5:].strip()
        else:
            continue
        decoded = wire.decode(data, last)
        if decoded is None:
            continue
        at = _v2_time(data)
        last = at if at is not None else last
        yield Recorded(
            at=last, directory=None, event=decoded.event, type=decoded.type, data=data, api="v2"
        )


def _v2_time(data: str) -> float | None:
    if not data:
        return None
    try:
        obj = parse_json(data)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    # `created` is the whole time; an id holds it only modulo 2**36 ms, so it is not mixed in.
    created = obj.get("created")
    if isinstance(created, int | float) and not isinstance(created, bool) and created > 0:
        return float(created) / 1000.0
    return None


def core_for(tracker: Tracker) -> ServerCore:
    """The per-server core the daemon would run around ``tracker``."""
    return ServerCore(tracker.server, V1Stream(directory_scoped=True), tracker=tracker)


def replay(
    target: Tracker | ServerCore, recording: Iterable[Recorded], *, until: float | None = None
) -> list[tuple[float, Transition]]:
    """Feed a recording to a server's core as the daemon does (decoding, the probe filter, clock
    samples, snapshots), ticking at every deadline in between; times are the recording's own.

    ``until`` keeps the clock running after the last event (to let timers expire).
    """
    core = target if isinstance(target, ServerCore) else core_for(target)
    wires = {True: V1Stream(directory_scoped=True), False: V1Stream(directory_scoped=False)}
    v2 = V2Stream()  # one per recording: it follows the order of a session's events
    happened: list[tuple[float, Transition]] = []
    offset = 0.0  # wall minus monotonic, as of the latest record

    def tick_until(t: float) -> None:
        while (deadline := core.next_deadline()) is not None and deadline <= t:
            happened.extend((deadline, tr) for tr in core.tick(deadline, deadline + offset))

    last = None
    for rec in recording:
        now = rec.now
        tick_until(now)
        offset = rec.at - now
        if rec.data is not None:
            core.wire = v2 if rec.api == "v2" else wires[rec.scoped]
            out = core.feed_line(rec.data, now, rec.at)
        else:
            out = core.feed(rec.event, now, rec.at)
        happened.extend((now, tr) for tr in out)
        last = now
    if until is not None and (last is None or until > last):
        tick_until(until)
    return happened


# -- recordings and the `replay` command ------------------------------------------------------

DIRECTORY_STREAM = "/event"  # the other stream, /global/event, wraps payloads with their directory
PERCENTILES = (0.5, 0.9, 0.99)


def read_recording(lines: Iterable[str]) -> Iterator[Recorded]:
    """Decode a `run --record` file (JSON lines); lines that are not records are skipped."""
    v2 = V2Stream()
    for line in lines:
        try:
            record = parse_json(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("at"), int | float):
            continue
        server = record.get("server")
        name = server if isinstance(server, str) else ""
        mono = record.get("mono")
        mono = float(mono) if isinstance(mono, int | float) and not isinstance(mono, bool) else None
        if "snapshot" in record:
            snapshot = snapshot_from_json(record["snapshot"])
            if snapshot is not None:
                yield Recorded(
                    float(record["at"]), snapshot.directory, snapshot, "snapshot", name, mono=mono
                )
            continue
        scoped = record.get("stream") == DIRECTORY_STREAM
        data = record.get("data")
        text = json.dumps(data) if data is not None else str(record.get("raw") or "")
        if record.get("stream") == V2_STREAM:
            # OpenCode 2: a heartbeat comment was recorded as empty data.
            v2_line = v2.decode(text, float(record["at"]))
            if v2_line is not None:
                yield Recorded(
                    at=float(record["at"]),
                    directory=None,
                    event=v2_line.event,
                    type=v2_line.type,
                    server=name,
                    data=text,
                    mono=mono,
                    api="v2",
                )
            continue
        decoded = decode_line(text, directory_scoped=scoped)
        if decoded is None:
            continue
        yield Recorded(
            at=float(record["at"]),
            directory=decoded.directory,
            event=decoded.event,
            type=decoded.type,
            server=name,
            data=text,
            scoped=scoped,
            mono=mono,
        )


def read_file(lines: Sequence[str], *, name: str = "capture") -> list[Recorded]:
    """A `run --record` file or an SSE capture (named ``name``), told apart by the first line."""
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith("{"):
        return list(read_recording(lines))
    first_data = next((line for line in lines if line.startswith("data:")), "")
    if '"properties"' not in first_data and '"data":' in first_data:
        return [replace(rec, server=name) for rec in read_sse_v2(lines)]  # OpenCode 2's /api/event
    scoped = '"payload"' not in first_data  # /global/event wraps every event in a payload
    return [replace(rec, server=name) for rec in read_sse(lines, directory_scoped=scoped)]


@dataclass(frozen=True, slots=True)
class Report:
    """What one replay with one set of timeouts would have reported."""

    timeouts: Timeouts
    prompts: int
    stalls: dict[str, int]
    outcomes: dict[str, int]
    pending: int  # prompts still open when the recording ends
    false_alarms: int  # stalled prompts that were answered later
    first_response: tuple[float, ...] = field(default=())  # sorted
    reply_duration: tuple[float, ...] = field(default=())  # sorted, answered prompts only

    @property
    def alerts(self) -> int:
        return sum(self.stalls.values())


def analyse(recording: Sequence[Recorded], timeouts: Timeouts) -> Report:
    """Replay every server of a recording through its own tracker and sum up what happened.

    The clock stops at the last recorded event: a prompt still waiting then is counted as
    pending, not as a stall, since the recording cannot say what came next.
    """
    servers: dict[str, list[Recorded]] = {}
    for rec in recording:
        servers.setdefault(rec.server, []).append(rec)
    happened: list[Transition] = []
    pending = 0
    for name, recs in servers.items():
        tracker = Tracker(name or "recorded", timeouts)
        happened += [t for _, t in replay(tracker, recs)]
        pending += tracker.pending_count
    stalls: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    stalled: set[tuple[str, str | None]] = set()
    answered: set[tuple[str, str | None]] = set()
    first: list[float] = []
    duration: list[float] = []
    prompts = 0
    for t in happened:
        key = (t.prompt.server, t.prompt.message_id)
        match t:
            case Accepted():
                prompts += 1
            case FirstResponse(latency=latency):
                first.append(latency)
            case Stalled(kind=kind):
                stalls[kind.value] = stalls.get(kind.value, 0) + 1
                stalled.add(key)
            case Completed(outcome=outcome, duration=took):
                outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1
                if outcome is Outcome.ANSWERED:
                    duration.append(took)
                    answered.add(key)
            case _:
                pass
    return Report(
        timeouts=timeouts,
        prompts=prompts,
        stalls=stalls,
        outcomes=outcomes,
        pending=pending,
        false_alarms=len(stalled & answered),
        first_response=tuple(sorted(first)),
        reply_duration=tuple(sorted(duration)),
    )


def sweep(
    recording: Sequence[Recorded], base: Timeouts, candidates: Sequence[float]
) -> list[Report]:
    """One report per candidate, set as both the first-response and the inactivity timeout."""
    return [analyse(recording, replace(base, first_response=c, inactivity=c)) for c in candidates]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _duration(value: float) -> str:
    return f"{value:g} s"


def _kinds(reports: Sequence[Report]) -> list[str]:
    seen: list[str] = []
    for report in reports:
        seen += [kind for kind in report.stalls if kind not in seen]
    return seen


def render_text(
    report: Report, sweeps: Sequence[Report], *, events: int, span: float, servers: int
) -> str:
    """The table an operator reads to pick a timeout."""
    t = report.timeouts
    out = [
        f"replayed {events} events from {servers} server(s) over {span:.1f} s: "
        f"{report.prompts} prompt(s)",
        f"timeouts: first response {_duration(t.first_response)}, inactivity "
        f"{_duration(t.inactivity)}, tool {_duration(t.tool)}",
        "",
        "stalls: "
        + (", ".join(f"{k} {n}" for k, n in report.stalls.items()) if report.stalls else "none"),
        "outcomes: "
        + ", ".join(
            [*(f"{k} {n}" for k, n in report.outcomes.items()), f"still pending {report.pending}"]
        ),
        "",
        f"{'seconds':<16}{'count':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}",
    ]
    for label, values in (
        ("first response", report.first_response),
        ("reply duration", report.reply_duration),
    ):
        cells = [_seconds(percentile(values, q)) for q in PERCENTILES]
        cells.append(_seconds(values[-1] if values else None))
        out.append(f"{label:<16}{len(values):>6}" + "".join(f"{c:>9}" for c in cells))
    if sweeps:
        kinds = _kinds(sweeps)
        out += [
            "",
            "sweep: each value as the first-response and inactivity timeout",
            "(false alarms: prompts alerted on that were answered later)",
            f"{'timeout':>9}{'alerts':>8}"
            + "".join(f"{k:>13}" for k in kinds)
            + f"{'false alarms':>14}",
        ]
        for r in sweeps:
            out.append(
                f"{_duration(r.timeouts.first_response):>9}{r.alerts:>8}"
                + "".join(f"{r.stalls.get(k, 0):>13}" for k in kinds)
                + f"{r.false_alarms:>14}"
            )
    return "\n".join(out)


def report_json(report: Report) -> dict[str, Any]:
    """One report as plain JSON values (for `replay --json`)."""
    t = report.timeouts
    return {
        "timeouts": {
            "first_response": t.first_response,
            "inactivity": t.inactivity,
            "tool": t.tool,
        },
        "prompts": report.prompts,
        "alerts": report.alerts,
        "stalls": report.stalls,
        "outcomes": report.outcomes,
        "still_pending": report.pending,
        "false_alarms": report.false_alarms,
        "first_response_seconds": _stats(report.first_response),
        "reply_duration_seconds": _stats(report.reply_duration),
    }


def _stats(values: Sequence[float]) -> dict[str, Any]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        "count": len(values),
        **{f"p{round(q * 100)}": r(percentile(values, q)) for q in PERCENTILES},
        "max": r(values[-1] if values else None),
    }


_ROTATED = re.compile(r"\.\d+$")


def with_rotated(paths: Sequence[str], keep: int = DEFAULT_KEEP) -> list[str]:
    """The files to read: each one given, and with a recording its rotated parts (``FILE.3``,
    ``FILE.2``, ``FILE.1``, those that exist) unless given too; each file once."""
    chosen: list[str] = []
    seen: set[str] = set()
    for path in paths:
        parts = [path]
        if not _ROTATED.search(path):
            older = [f"{path}.{n}" for n in range(keep, 0, -1)]
            parts = [p for p in older if os.path.isfile(p)] + parts
        for part in parts:
            key = os.path.realpath(part)
            if key not in seen:
                seen.add(key)
                chosen.append(part)
    return chosen


def replay_files(
    paths: Sequence[str], timeouts: Timeouts, candidates: Sequence[float], *, as_json: bool
) -> str:
    """The `replay` command's output for recordings or captures (read in the order given).

    A recording's rotated parts are read with it (``replay events.jsonl`` reads
    ``events.jsonl.1`` too, when it exists). Raises OSError when a file cannot be read.
    """
    recording: list[Recorded] = []
    for path in with_rotated(paths):
        with open(path, encoding="utf-8") as f:
            recording += read_file(f.readlines(), name="capture")
    recording.sort(key=lambda rec: rec.now)  # stable: events of one moment keep their order
    report = analyse(recording, timeouts)
    sweeps = sweep(recording, timeouts, candidates)
    span = recording[-1].now - recording[0].now if recording else 0.0
    servers = len({rec.server for rec in recording})
    if as_json:
        doc = {
            "events": len(recording),
            "servers": servers,
            "span_seconds": round(span, 3),
            **report_json(report),
            "sweep": [report_json(r) for r in sweeps],
        }
        return json.dumps(doc, indent=1)
    return render_text(report, sweeps, events=len(recording), span=span, servers=servers)
