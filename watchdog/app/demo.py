"""`opencode-watchdog demo`: the real daemon against a simulated server playing a bundled recording.

The recording (`demo_data/demo.record.jsonl`, in the format `run --record` writes, built by
scripts/make-demo-recording.py from captures of a real `opencode serve` 1.18.33) holds a normal
reply, a prompt that hangs and is aborted, and a reply that goes silent mid-way. The demo plays it
at its recorded pace with 2 s timeouts, so a stall, its resolution and a still-firing stall show
within about fifteen seconds; then it replays the same file on a virtual clock, as `replay` does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources

import anyio
import httpx
import structlog

from watchdog.app.config import Config, parse_listen
from watchdog.app.daemon import Daemon
from watchdog.app.replay import analyse, read_recording, render_text, sweep
from watchdog.core.settings import ConfigError, ServerConfig, Timeouts
from watchdog.sinks.recent import Incident

log = structlog.get_logger("watchdog.demo")

RECORDING = "demo.record.jsonl"
DEMO_TIMEOUTS = Timeouts(first_response=2.0, inactivity=2.0, tool=10.0)
SWEEP = (1.0, 2.0, 5.0)
HEARTBEAT = b'data: {"payload":{"id":"evt_demo","type":"server.heartbeat","properties":{}}}\n\n'


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE frame to send after ``delay`` seconds."""

    delay: float
    raw: bytes


def recording_lines() -> list[str]:
    """The bundled recording, one JSON record per line."""
    text = (
        resources.files("watchdog.app").joinpath("demo_data", RECORDING).read_text(encoding="utf-8")
    )
    return text.splitlines()


def playlist() -> list[Frame]:
    """The recording as SSE frames, each after the recorded gap since the previous one."""
    frames: list[Frame] = []
    previous: float | None = None
    for line in recording_lines():
        record = json.loads(line)
        at = float(record["at"])
        delay = 0.0 if previous is None else max(0.0, at - previous)
        previous = at
        data = json.dumps(record["data"], separators=(",", ":"))
        frames.append(Frame(delay, f"data: {data}\n\n".encode()))
    return frames


def replayed() -> str:
    """The same recording through the `replay` path: a virtual clock, the demo's timeouts."""
    recording = list(read_recording(recording_lines()))
    report = analyse(recording, DEMO_TIMEOUTS)
    sweeps = sweep(recording, DEMO_TIMEOUTS, SWEEP)
    span = recording[-1].at - recording[0].at
    return render_text(report, sweeps, events=len(recording), span=span, servers=1)


class DemoServer:
    """An httpx transport that plays the playlist on the first `/global/event` connection."""

    def __init__(self) -> None:
        self.finished = anyio.Event()
        self._played = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        # The REST reads the daemon makes after connecting, answered as a fresh OpenCode
        # 1.18.33 answers them: nothing runs yet, nobody waits on a permission or question.
        if path in ("/project", "/permission", "/question") or (
            path.startswith("/session/") and path.endswith("/message")
        ):
            return httpx.Response(200, json=[])
        if path == "/session/status":
            return httpx.Response(200, json={})
        if path != "/global/event":
            return httpx.Response(404)
        body = self._heartbeats() if self._played else self._play()
        self._played = True
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    async def _play(self) -> AsyncIterator[bytes]:
        for frame in playlist():
            if frame.delay:
                await anyio.sleep(frame.delay)
            yield frame.raw
        self.finished.set()
        while True:
            await anyio.sleep(10)
            yield HEARTBEAT

    async def _heartbeats(self) -> AsyncIterator[bytes]:
        yield b'data: {"payload":{"id":"evt_demo","type":"server.connected","properties":{}}}\n\n'
        while True:
            await anyio.sleep(10)
            yield HEARTBEAT


SUMMARY_SERIES = (
    "opencode_watchdog_prompts_accepted_total",
    "opencode_watchdog_prompts_completed_total",
    "opencode_watchdog_stalls_total",
    "opencode_watchdog_prompts_pending",
)
# The timeout behind each kind, to say why it fired; kinds without one are reported at once.
_TIMEOUT_OF = {"no_response": "first_response", "inactive": "inactivity"}


def summary(incidents: Sequence[Incident], timeouts: Timeouts) -> str:
    """What the demo detected and why, oldest first, one short line per stall."""
    lines = [f"\n# DEMO summary: {len(incidents)} stall(s) detected"]
    for item in reversed(incidents):
        limit = _TIMEOUT_OF.get(item.kind)
        why = item.why + (f" ({getattr(timeouts, limit):g} s)" if limit else "")
        if item.outcome:
            end = f"then {item.outcome}"
        elif item.resolved_at is not None:
            end = "resolved"
        else:
            end = "still firing"
        reason = f" [{item.reason}]" if item.reason else ""
        lines.append(
            f"#  {item.kind:<12} after {item.waited:4.1f} s: {why}{reason}; {end}."
            f" session {item.session_id}"
        )
    return "\n".join(lines)


def run_demo(listen: str, *, hold: bool) -> int:
    """Run the demo; returns the exit code."""
    host, port = parse_listen("--listen", listen)
    try:
        return anyio.run(_demo, host, port, hold)
    except BaseExceptionGroup as group:
        # A busy --listen port surfaces from inside the task group; it is one line, exit 2.
        found = _config_error(group)
        if found is None:
            raise
        raise found from None


def _config_error(group: BaseExceptionGroup[BaseException]) -> ConfigError | None:
    for exc in group.exceptions:
        if isinstance(exc, ConfigError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := _config_error(exc)) is not None:
            return found
    return None


async def _demo(host: str, port: int, hold: bool) -> int:
    server = DemoServer()
    config = Config(
        servers=(ServerConfig("demo", "http://opencode.demo"),),
        listen_host=host,
        listen_port=port,
        timeouts=DEMO_TIMEOUTS,
    )
    daemon = Daemon(config, transport=server.transport())
    for watch in daemon.watches:
        # The simulated server answers REST as OpenCode does before the recording begins; the
        # read a few seconds after connecting would find it contradicting its own recording.
        watch.follow_up_delay = None
    log.info(
        "demo.start",
        note="a simulated OpenCode server plays a bundled recording; timeouts are 2 s",
    )
    async with anyio.create_task_group() as tg:
        bound = await tg.start(daemon.run)
        log.info("demo.serving", page=f"http://{host}:{bound}/")
        await server.finished.wait()
        await anyio.sleep(0.5)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://{host}:{bound}/metrics")).text
        print(summary(daemon.recent.latest(), DEMO_TIMEOUTS), flush=True)
        series = [
            line
            for line in text.splitlines()
            if line.startswith(SUMMARY_SERIES) and not line.endswith(" 0.0")
        ]
        print(f"# metrics (non-zero) from http://{host}:{bound}/metrics:", flush=True)
        print("\n".join(series), file=sys.stdout, flush=True)
        print("\n# The same recording replayed on a virtual clock (opencode-watchdog replay):")
        print(replayed(), flush=True)
        if hold:
            print(
                f"# serving the status page http://{host}:{bound}/ and /metrics until Ctrl-C",
                flush=True,
            )
        else:
            print("# `demo --hold` keeps the status page and /metrics up afterwards", flush=True)
            tg.cancel_scope.cancel()
    return 0
