"""`opencode-watchdog demo`: the real daemon against a simulated server replaying bundled captures.

The captures (from a real `opencode serve` 1.18.33) hold a normal reply, a prompt that hangs and is
aborted, and a reply that goes silent mid-way. The demo plays them with short timeouts so a stall,
its resolution and a still-firing stall all show within about twenty seconds.
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

from watchdog.config import Config, ConfigError, ServerConfig, parse_listen
from watchdog.daemon import Daemon
from watchdog.recent import Incident
from watchdog.replay import event_id_time
from watchdog.tracker import Timeouts

log = structlog.get_logger("watchdog.demo")

SCENARIOS = ("normal", "abort", "hang-mid")
DEMO_TIMEOUTS = Timeouts(first_response=2.0, inactivity=2.0, tool=10.0)
MAX_GAP = 3.0  # long recorded silences are shortened, but stay longer than the demo timeouts
BETWEEN = 0.5
HEARTBEAT = b'data: {"payload":{"id":"evt_demo","type":"server.heartbeat","properties":{}}}\n\n'


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE frame to send after ``delay`` seconds."""

    delay: float
    raw: bytes


def playlist() -> list[Frame]:
    """The bundled captures as one stream, silences capped at MAX_GAP."""
    frames: list[Frame] = []
    for n, scenario in enumerate(SCENARIOS):
        text = (
            resources.files("watchdog")
            .joinpath("demo_data", f"{scenario}.global-event.sse")
            .read_text(encoding="utf-8")
        )
        previous: float | None = None
        for line in text.splitlines():
            if not line.startswith("data: "):
                continue
            payload = json.loads(line[6:]).get("payload", {})
            if n and payload.get("type") == "server.connected":
                continue  # one connection: only one greeting
            event_id = payload.get("id") or payload.get("syncEvent", {}).get("id")
            at = event_id_time(event_id) if isinstance(event_id, str) else None
            if at is None:
                at = previous or 0.0
            delay = (
                BETWEEN if previous is None and n else min(MAX_GAP, max(0.0, at - (previous or at)))
            )
            previous = at
            frames.append(Frame(delay, (line + "\n\n").encode()))
    return frames


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
    log.info(
        "demo.start",
        note="DEMO: a simulated OpenCode server replays bundled captures; timeouts are 2 s",
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
        if hold:
            print(f"# serving http://{host}:{bound}/metrics until Ctrl-C", flush=True)
        else:
            tg.cancel_scope.cancel()
    return 0
