"""The benchmarks. Each runs in its own process (``python -m bench.cases NAME``) and prints JSON.

They drive the real daemon (``watchdog.app.daemon.Daemon``: source, decoder, tracker, metrics, log
sink, timers, endpoint) against ``bench.server`` over loopback, and use only interfaces that the
code under test has had since before the benchmark existed, so old and new code run the same case.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
from httpx_sse import aconnect_sse

from bench import streams as synth


def _from(name: str, new: str, old: str) -> Any:
    """``name`` from module ``new``, or from ``old`` in a ref from before the layout by layer
    (5f36756): ``--against`` runs the same cases on older code."""
    try:
        return getattr(importlib.import_module(new), name)
    except ImportError:
        return getattr(importlib.import_module(old), name)


try:
    logs: Any = importlib.import_module("watchdog.app.logs")
except ImportError:
    logs = importlib.import_module("watchdog.logs")
Config = _from("Config", "watchdog.app.config", "watchdog.config")
Daemon = _from("Daemon", "watchdog.app.daemon", "watchdog.daemon")
StreamState = _from("StreamState", "watchdog.app.watch", "watchdog.watch")
PromptAdmitted = _from("PromptAdmitted", "watchdog.core.events", "watchdog.events")
ServerConfig = _from("ServerConfig", "watchdog.core.settings", "watchdog.config")
Timeouts = _from("Timeouts", "watchdog.core.settings", "watchdog.tracker")
Tracker = _from("Tracker", "watchdog.core.tracker", "watchdog.tracker")
Stalled = _from("Stalled", "watchdog.core.transitions", "watchdog.transitions")
try:  # the read again after each (re)connect; refs before issue 16 have none
    FOLLOW_UP: float = importlib.import_module("watchdog.app.watch").RECONCILE_FOLLOW_UP
except (ImportError, AttributeError):
    FOLLOW_UP = 0.0

Segment = tuple[float, bytes | list[bytes]]
Plan = dict[str, list[Segment]]
CASES: dict[str, Callable[[], Any]] = {}


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    CASES[fn.__name__] = fn
    return fn


# -- plumbing -------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(plan: Plan) -> Any:
    """Run bench.server in its own process; yields its base URL."""
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump(plan, f)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.server", f.name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(5)
        os.unlink(f.name)


def paced(
    lines: list[bytes], rate: float, *, tick: float = 0.01, start: float = 0.0
) -> list[Segment]:
    """Send ``lines`` at ``rate`` lines/s, in one segment per ``tick``."""
    per = max(1, round(rate * tick))
    return [
        (start + i / per * tick, b"".join(lines[i : i + per])) for i in range(0, len(lines), per)
    ]


def paced_events(lines: list[bytes], rate: float, *, tick: float = 0.002) -> list[Segment]:
    """``paced``, but each event its own HTTP chunk, as Bun writes them."""
    per = max(1, round(rate * tick))
    return [(i / per * tick, lines[i : i + per]) for i in range(0, len(lines), per)]


def quiet_logs() -> None:
    """The real JSON log set-up, written to /dev/null: lines are still rendered and written."""
    logs.configure("json", "info", open(os.devnull, "w"))  # noqa: SIM115 - open for the process


@dataclass
class Recorder:
    """A sink that notes when each stall reached the sinks (wall clock)."""

    stalls: list[tuple[float, float, str]] = field(default_factory=list)

    def emit(self, transition: Any) -> None:

        if isinstance(transition, Stalled):
            self.stalls.append((time.time(), transition.prompt.accepted_at, transition.kind.value))


def daemon_for(urls: list[str], timeouts: Any) -> Any:

    servers = tuple(ServerConfig(f"s{i}", url) for i, url in enumerate(urls))
    return Daemon(Config(servers=servers, listen_port=0, timeouts=timeouts, liveness_timeout=60.0))


def counter_total(counter: Any, name: str | None = None) -> float:
    """Sum of a counter family's ``_total`` samples (cheap: only that family is collected)."""
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and (
                name is None or sample.labels.get("server") == name
            ):
                total += sample.value
    return total


async def wait_until(pred: Callable[[], bool], limit: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(step)
    return True


@contextlib.asynccontextmanager
async def running(daemon: Any) -> AsyncIterator[int]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(daemon.run)

        ok = await wait_until(
            lambda: all(w.status.state is StreamState.UP for w in daemon.watches), 10
        )
        assert ok, "streams did not come up"
        # Let the reconcile reads after connecting finish, the follow-up read a few seconds later
        # included: the bench server answers every read with an empty state (all idle, no
        # messages), which would end the prompts its stream is about to carry as dropped.
        await anyio.sleep(FOLLOW_UP + 0.3)
        gc.collect()
        yield port
        tg.cancel_scope.cancel()


async def go(base: str) -> None:
    """Tell the server to start sending (a raw request: an httpx client would cost an SSL context)."""
    port = int(base.rsplit(":", 1)[1])
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /go HTTP/1.1\r\nHost: bench\r\n\r\n")
        with contextlib.suppress(anyio.EndOfStream):
            await stream.receive()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lateness_ms(recorder: Recorder, timeout: float, want: int) -> dict[str, Any]:
    """How late each stall reached the sinks; an ``error`` when the case saw other than the
    ``want`` no-response stalls it was built for (then the figures measure something else)."""
    late = [(t - (accepted + timeout)) * 1000 for t, accepted, _ in recorder.stalls]
    result: dict[str, Any] = {
        "stalls": len(late),
        "p50_ms": round(pct(late, 0.5), 1),
        "p99_ms": round(pct(late, 0.99), 1),
        "max_ms": round(max(late, default=float("nan")), 1),
    }
    kinds = sorted({kind for _, _, kind in recorder.stalls} - {"no_response"})
    if len(late) != want or kinds:
        result["error"] = f"measured something else: {len(late)} stalls (want {want}), {kinds}"
    return result


# -- 1. ingest ------------------------------------------------------------------------------------

INGEST_LINES = 100_000
REPEATS = 3


async def _floor_once(base: str, total: int) -> tuple[float, float]:

    timeout = httpx.Timeout(10.0, read=60.0)
    async with (
        httpx.AsyncClient(timeout=timeout) as client,
        aconnect_sse(client, "GET", f"{base}/global/event") as source,
    ):
        events = source.aiter_sse()
        json.loads((await events.__anext__()).data)  # server.connected
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await go(base)
        n = 0
        async for sse in events:
            json.loads(sse.data)
            n += 1
            if n == total:
                break
        return time.perf_counter() - wall0, time.process_time() - cpu0


async def _daemon_once(base: str, events: int) -> tuple[float, float]:

    daemon = daemon_for([base], Timeouts())
    async with running(daemon):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await go(base)
        ok = await wait_until(
            lambda: counter_total(daemon.metrics.events) >= events + 1, 120, 0.002
        )
        assert ok, "the daemon did not see every event"
        return time.perf_counter() - wall0, time.process_time() - cpu0


@case
async def ingest() -> dict[str, Any]:
    lines, mix = synth.busy_reply_stream(INGEST_LINES)
    plan: Plan = {"": [(0.0, b"".join(lines))]}
    floors, daemons = [], []
    for _ in range(REPEATS):
        with serving(plan) as base:
            floors.append(await _floor_once(base, mix.lines))
        with serving(plan) as base:
            daemons.append(await _daemon_once(base, mix.events))
    floor_wall = statistics.median(w for w, _ in floors)
    floor_cpu = statistics.median(c for _, c in floors)
    wall = statistics.median(w for w, _ in daemons)
    cpu = statistics.median(c for _, c in daemons)
    return {
        "lines": mix.lines,
        "deltas_share": round(mix.deltas / mix.lines, 3),
        "sync_share": round(mix.syncs / mix.lines, 3),
        "mean_delta_bytes": round(mix.mean_delta_bytes),
        "events_per_s": round(mix.lines / wall),
        "floor_events_per_s": round(mix.lines / floor_wall),
        "rate_vs_floor": round(floor_wall / wall, 2),
        "cpu_us_per_event": round(cpu / mix.lines * 1e6, 2),
        "floor_cpu_us_per_event": round(floor_cpu / mix.lines * 1e6, 2),
    }


# -- 2. busy host ---------------------------------------------------------------------------------

BUSY_RATE = 5000
BUSY_SECONDS = 10


@case
async def busy_host() -> dict[str, Any]:

    lines, mix = synth.busy_reply_stream(BUSY_RATE * BUSY_SECONDS)
    with serving({"": paced(lines, BUSY_RATE)}) as base:
        floor_wall, floor_cpu = await _floor_once(base, mix.lines)
    with serving({"": paced(lines, BUSY_RATE)}) as base:
        daemon = daemon_for([base], Timeouts())
        async with running(daemon):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            await go(base)
            ok = await wait_until(
                lambda: counter_total(daemon.metrics.events) >= mix.events + 1, 60, 0.05
            )
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "events_per_s": round(mix.lines / wall),
        "seconds": round(wall, 2),
        "complete": ok,
        "cpu_percent": round(100 * cpu / wall, 1),
        "floor_cpu_percent": round(100 * floor_cpu / floor_wall, 1),
    }


# -- 3. scale -------------------------------------------------------------------------------------

PENDING = 10_000
PENDING_SESSIONS = 200
IDLE_SESSIONS = 100_000
ADMIT_LIMIT = 45.0


def _pending_lines(ids: synth.Ids, sessions: int, per_session: int, first: int = 0) -> list[bytes]:
    out = []
    ms = 1_795_596_579_000
    for s in range(first, first + sessions):
        out.append(synth.session_updated(ids, synth.sid(s), ms))
        out.append(synth.busy(ids, synth.sid(s)))
        out += [
            synth.user_message(ids, synth.sid(s), synth.mid(s * 1000 + k), ms)
            for k in range(per_session)
        ]
    return out


async def _latency(client: httpx.AsyncClient, path: str, n: int = 15) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = await client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200
    return {
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "bytes": len(response.content),
    }


@case
async def scale_admit() -> dict[str, Any]:

    ids = synth.Ids()
    idle = [
        synth.session_updated(ids, synth.sid(1_000_000 + i), 1_795_596_579_000)
        for i in range(IDLE_SESSIONS)
    ]
    prompts = _pending_lines(ids, PENDING_SESSIONS, PENDING // PENDING_SESSIONS)
    # The pending prompts first: their 200 sessions are then the least recently active ones,
    # which the session limit must look past for each of the 100 000 idle sessions.
    plan: Plan = {"": [(0.0, b"".join(prompts)), (0.0, b"".join(idle))]}
    total = len(prompts) + len(idle) + 1
    result: dict[str, Any] = {}
    with serving(plan) as base:
        daemon = daemon_for([base], Timeouts(3600.0, 3600.0, 3600.0))
        async with running(daemon) as port:

            def accepted() -> float:
                return counter_total(daemon.metrics.prompts_accepted)

            t0 = time.perf_counter()
            await go(base)
            ok = await wait_until(lambda: accepted() >= PENDING, ADMIT_LIMIT, 0.002)
            t1 = time.perf_counter()
            result["admit_s"] = round(t1 - t0, 2) if ok else None
            result["admitted"] = int(accepted())
            if not ok:
                result["admit_s_note"] = f"not done after {ADMIT_LIMIT:.0f} s"
                # Let it finish (bounded) so the endpoint figures are taken at the same size.
                await wait_until(lambda: accepted() >= PENDING, 120, 0.05)
                t1 = time.perf_counter()
            done = await wait_until(
                lambda: counter_total(daemon.metrics.events) >= total, 120, 0.002
            )
            result["idle_sessions_s"] = round(time.perf_counter() - t1, 2) if done else None
            pending = sum(w.tracker.pending_count for w in daemon.watches)
            result["pending"] = pending
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                result["metrics"] = await _latency(client, "/metrics")
                result["status"] = await _latency(client, "/status")
    result["bytes_per_pending_prompt"] = _memory_per_prompt()
    return result


def _memory_per_prompt() -> int:
    """Tracker memory per pending prompt (tracemalloc), 10 000 prompts in 200 sessions."""

    events = [
        PromptAdmitted(synth.sid(s), synth.mid(s * 1000 + k), 1_795_596_579.0)
        for s in range(PENDING_SESSIONS)
        for k in range(PENDING // PENDING_SESSIONS)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracker = Tracker("s0")
    for event in events:
        tracker.feed(event, 1_795_596_580.0)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert tracker.pending_count == PENDING
    return round((after - before) / PENDING)


STALL_TIMEOUT = 2.0


@case
async def stalls_queued() -> dict[str, Any]:
    """200 sessions, each a reply opened (nothing said yet) with 49 prompts queued behind it;
    the sessions arrive over 5 s, so the 200 running prompts reach their deadlines over 5 s."""

    ids = synth.Ids()
    ms = 1_795_596_579_000
    per_session: list[bytes] = []
    for s in range(PENDING_SESSIONS):
        session, lead = synth.sid(s), synth.mid(s * 1000)
        chunk = [
            synth.session_updated(ids, session, ms),
            synth.user_message(ids, session, lead, ms),
            synth.busy(ids, session),
            synth.assistant_message(ids, session, synth.mid(s * 1000 + 999), lead, ms),
        ]
        chunk += [
            synth.user_message(ids, session, synth.mid(s * 1000 + k), ms) for k in range(1, 50)
        ]
        per_session.append(b"".join(chunk))
    plan = {"": paced(per_session, PENDING_SESSIONS / 5.0)}
    recorder = Recorder()
    with serving(plan) as base:
        daemon = daemon_for([base], Timeouts(STALL_TIMEOUT, STALL_TIMEOUT, 3600.0))
        daemon.alerting.sinks.append(recorder)
        async with running(daemon):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await go(base)
            await wait_until(lambda: len(recorder.stalls) >= PENDING_SESSIONS, 45, 0.05)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            pending = sum(w.tracker.pending_count for w in daemon.watches)
    result: dict[str, Any] = {
        "pending": pending,
        **lateness_ms(recorder, STALL_TIMEOUT, PENDING_SESSIONS),
        "cpu_percent": round(100 * cpu / wall, 1),
    }
    if pending != PENDING:  # the queued prompts wait without a clock, still pending
        wrong = f"measured something else: {pending} pending (want {PENDING})"
        result["error"] = f"{result['error']}; {wrong}" if "error" in result else wrong
    return result


OWN_SESSIONS = 3000


@case
async def stalls_sessions() -> dict[str, Any]:
    """3 000 prompts in 3 000 sessions sent over 3 s, each with its own deadline."""

    ids = synth.Ids()
    ms = 1_795_596_579_000
    per_session = [
        synth.session_updated(ids, synth.sid(s), ms)
        + synth.user_message(ids, synth.sid(s), synth.mid(s), ms)
        + synth.busy(ids, synth.sid(s))  # its turn starts, as OpenCode's does at once
        for s in range(OWN_SESSIONS)
    ]
    plan = {"": paced(per_session, OWN_SESSIONS / 3.0)}
    recorder = Recorder()
    with serving(plan) as base:
        daemon = daemon_for([base], Timeouts(STALL_TIMEOUT, STALL_TIMEOUT, 3600.0))
        daemon.alerting.sinks.append(recorder)
        async with running(daemon):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await go(base)
            await wait_until(lambda: len(recorder.stalls) >= OWN_SESSIONS, 45, 0.05)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        **lateness_ms(recorder, STALL_TIMEOUT, OWN_SESSIONS),
        "cpu_percent": round(100 * cpu / wall, 1),
    }


# -- 4. many servers ------------------------------------------------------------------------------

SERVERS = 20
SERVER_RATE = 100
MANY_SECONDS = 10
MANY_PENDING = 5000
MANY_TIMEOUT = 3.0


@case
async def many_servers() -> dict[str, Any]:
    """20 servers x 100 events/s for 10 s; 5 000 prompts (own sessions) arrive over the first 5 s
    and stall 3 s later, while each server also streams a reply."""

    per_server = MANY_PENDING // SERVERS
    plan: Plan = {}
    total_events = 0
    for i in range(SERVERS):
        lines, _ = synth.busy_reply_stream(SERVER_RATE * MANY_SECONDS, sessions=2, seed=i)
        ids = synth.Ids(10_000_000)
        ms = 1_795_596_579_000
        admissions = [
            synth.user_message(ids, synth.sid(100_000 + k), synth.mid(100_000 + k), ms)
            + synth.busy(ids, synth.sid(100_000 + k))  # its turn starts
            for k in range(per_server)
        ]
        # Interleave: the first 5 s carry the admissions within the same 100 events/s.
        merged: list[bytes] = []
        step = len(lines) // 2 // per_server
        for k, line in enumerate(lines):
            merged.append(line)
            if k % step == 0 and k // step < per_server:
                merged.append(admissions[k // step])
        merged = merged[: SERVER_RATE * MANY_SECONDS]
        total_events += sum(1 for x in merged if b'"payload":{"type":"sync"' not in x)
        plan[f"/s{i}"] = paced(merged, SERVER_RATE, tick=0.01)
    with serving(plan) as base:
        floor_wall, floor_cpu = await _floor_many(base, plan)
    recorder = Recorder()
    with serving(plan) as base:
        daemon = daemon_for(
            [f"{base}/s{i}" for i in range(SERVERS)], Timeouts(MANY_TIMEOUT, MANY_TIMEOUT, 3600.0)
        )
        daemon.alerting.sinks.append(recorder)
        async with running(daemon):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await go(base)
            await wait_until(
                lambda: counter_total(daemon.metrics.events) >= total_events + SERVERS, 50, 0.05
            )
            await wait_until(lambda: len(recorder.stalls) >= MANY_PENDING, 5, 0.05)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            seen = counter_total(daemon.metrics.events) - SERVERS
    return {
        "events": int(seen),
        "events_expected": total_events,
        "seconds": round(wall, 2),
        "cpu_percent": round(100 * cpu / wall, 1),
        "floor_cpu_percent": round(100 * floor_cpu / floor_wall, 1),
        **lateness_ms(recorder, MANY_TIMEOUT, MANY_PENDING),
    }


async def _floor_many(base: str, plan: Plan) -> tuple[float, float]:
    """One bare httpx + httpx-sse + json.loads reader per server path, all in one loop."""
    totals = {
        path: sum(seg.count(b"\n\n") for _, seg in segments) for path, segments in plan.items()
    }
    timeout = httpx.Timeout(10.0, read=60.0)
    async with httpx.AsyncClient(timeout=timeout) as client:

        async def read(path: str, ready: anyio.Event) -> None:
            async with aconnect_sse(client, "GET", f"{base}{path}/global/event") as source:
                events = source.aiter_sse()
                await events.__anext__()  # server.connected
                ready.set()
                n = 0
                async for sse in events:
                    json.loads(sse.data)
                    n += 1
                    if n == totals[path]:
                        break

        async with anyio.create_task_group() as tg:
            readies = []
            for path in plan:
                ready = anyio.Event()
                readies.append(ready)
                tg.start_soon(read, path, ready)
            for ready in readies:
                await ready.wait()
            gc.collect()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            await go(base)
        return time.perf_counter() - wall0, time.process_time() - cpu0


# -- 7. the real mix, the real daemon process: CPU from /proc ---------------------------------------

REAL_RATE = 5000  # lines a second, as in the measurement
REAL_TIMEOUTS = ("--first-response-timeout", "3600s", "--inactivity-timeout", "3600s")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only these cases need it

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon_process(base: str) -> Any:
    """`opencode-watchdog run` (this checkout's or the ref's: the case runs in its directory)
    watching ``base``, logs to /dev/null; yields (process, its endpoint's URL)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog", "run", "--server", base, "--listen", f"127.0.0.1:{port}",
         "--log-format", "json", *REAL_TIMEOUTS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def _events_counted(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("opencode_watchdog_events_total{")
    )


async def _daemon_reads(stream: Any, plan: Plan, expected_seconds: float) -> dict[str, float]:
    """The daemon process reads the plan: its CPU (from /proc) and wall from go to the last line."""
    with serving(plan) as base, daemon_process(base) as (proc, url):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            up = await wait_until_async(lambda: _healthy(client), 30)
            assert up, "the daemon did not come up"
            await anyio.sleep(0.5)  # its reconcile after connecting
            cpu0, wall0 = _proc_cpu(proc.pid), time.perf_counter()
            await go(base)
            await anyio.sleep(max(0.0, expected_seconds - 0.5))
            # A few scrapes at the end only: each costs the daemon some CPU too.
            while await _events_counted(client) < stream.events + 1:
                await anyio.sleep(0.05)
            wall, cpu = time.perf_counter() - wall0, _proc_cpu(proc.pid) - cpu0
    return {"wall": wall, "cpu": cpu}


async def _healthy(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def wait_until_async(pred: Callable[[], Any], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not await pred():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.05)
    return True


async def _floor_reads(stream: Any, plan: Plan) -> dict[str, float]:
    """The floor process reads the plan: its CPU (from /proc) and wall from go to the last line."""
    with serving(plan) as base:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started before anything is measured
            [sys.executable, "-m", "bench.floor", f"{base}/global/event", str(len(stream.lines))],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            ready = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert ready.strip() == "ready"
            cpu0, wall0 = _proc_cpu(proc.pid), time.perf_counter()
            await go(base)
            done = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert done.strip() == "done"
            wall, cpu = time.perf_counter() - wall0, _proc_cpu(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(10)
    return {"wall": wall, "cpu": cpu}


@case
async def real_steady() -> dict[str, Any]:
    """5 000 lines a second of the real captures' mix (400 sessions, deltas x8, about 8 s), one
    HTTP chunk per event as Bun sends them: CPU per line of the daemon process against the
    floor, both read from /proc."""
    from bench import real  # noqa: PLC0415 - only these cases need it

    stream = real.busy_server()
    plan: Plan = {"": paced_events(stream.lines, REAL_RATE)}
    floor = await _floor_reads(stream, plan)
    daemon = await _daemon_reads(stream, plan, len(stream.lines) / REAL_RATE)
    per = len(stream.lines)
    return {
        "lines": per,
        "cpu_us_per_line": round(daemon["cpu"] / per * 1e6, 2),
        "floor_cpu_us_per_line": round(floor["cpu"] / per * 1e6, 2),
        "cpu_vs_floor": round(daemon["cpu"] / floor["cpu"], 2),
        "cpu_percent": round(100 * daemon["cpu"] / daemon["wall"], 1),
        "floor_cpu_percent": round(100 * floor["cpu"] / floor["wall"], 1),
    }


@case
async def real_burst() -> dict[str, Any]:
    """The whole real-mix stream (400 sessions, deltas x8) as fast as it can be read."""
    from bench import real  # noqa: PLC0415 - only these cases need it

    stream = real.busy_server()
    plan: Plan = {"": [(0.0, stream.lines)]}  # one HTTP chunk per event, all at once
    floor = await _floor_reads(stream, plan)
    daemon = await _daemon_reads(stream, plan, 0.5)
    n = len(stream.lines)
    return {
        "lines": n,
        "deltas_share": round(stream.deltas / n, 3),
        "sync_share": round(stream.syncs / n, 3),
        "lines_per_s": round(n / daemon["wall"]),
        "floor_lines_per_s": round(n / floor["wall"]),
        "rate_vs_floor": round(floor["wall"] / daemon["wall"], 2),
        "cpu_us_per_line": round(daemon["cpu"] / n * 1e6, 2),
        "floor_cpu_us_per_line": round(floor["cpu"] / n * 1e6, 2),
    }


def main() -> None:
    name = sys.argv[1]
    quiet_logs()
    gc.freeze()
    result = anyio.run(CASES[name])
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
