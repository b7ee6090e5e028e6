"""Issue 9, logs under a flood: repeated lines are cut to a few plus a summary; metrics count all."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import anyio
import pytest
import structlog
from anyio.abc import ByteStream

from tests.conftest import wait_for
from tests.hostile import CONNECTED, HEARTBEAT, SSE_HEAD, Request, answer_json, hostile_server
from tests.test_daemon import FAST, sample
from watchdog.app.config import Config
from watchdog.app.daemon import Daemon
from watchdog.app.logs import LogLimiter, configure, report_suppressed
from watchdog.core.settings import ServerConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Logs configured as in production (JSON lines), restored afterwards."""
    stream = io.StringIO()
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_flood_of_one_event_is_cut_to_a_few_lines_and_a_summary(output: io.StringIO) -> None:
    """5 000 identical warnings for one server: 5 lines, then one summary naming the 4 995."""
    clock = FakeClock()
    limiter = LogLimiter(burst=5, window=60.0, clock=clock)
    configure("json", "info", output, limiter=limiter)
    log = structlog.get_logger("test")
    for i in range(5000):
        log.warning("event.malformed", server="oc", reason=f"line {i}")
    clock.now += 60
    assert report_suppressed(limiter) == 4995
    got = lines(output)
    assert [e["event"] for e in got] == ["event.malformed"] * 5 + ["log.suppressed"]
    summary = got[-1]
    assert summary["suppressed_event"] == "event.malformed"
    assert summary["server"] == "oc"
    assert summary["count"] == 4995
    assert summary["message"] == "4995 more like this in the last minute"
    assert summary["level"] == "warning"


def test_each_server_and_event_has_its_own_allowance(output: io.StringIO) -> None:
    """A flood from one server does not silence another server, nor another event."""
    clock = FakeClock()
    limiter = LogLimiter(burst=2, clock=clock)
    configure("json", "info", output, limiter=limiter)
    log = structlog.get_logger("test")
    for _ in range(10):
        log.warning("event.malformed", server="a")
    log.warning("event.malformed", server="b")
    log.warning("stream.down", server="a")
    got = [(e["event"], e["server"]) for e in lines(output)]
    assert got == [
        ("event.malformed", "a"),
        ("event.malformed", "a"),
        ("event.malformed", "b"),
        ("stream.down", "a"),
    ]


def test_the_next_window_lets_lines_through_again(output: io.StringIO) -> None:
    """After the window, the event logs again; the old window's count is reported once."""
    clock = FakeClock()
    limiter = LogLimiter(burst=1, window=60.0, clock=clock)
    configure("json", "info", output, limiter=limiter)
    log = structlog.get_logger("test")
    log.warning("alert.failed", to="http://hook:1")
    log.warning("alert.failed", to="http://hook:1")
    clock.now += 61
    log.warning("alert.failed", to="http://hook:1")
    assert report_suppressed(limiter) == 1
    assert report_suppressed(limiter) == 0
    assert [e["event"] for e in lines(output)] == ["alert.failed", "alert.failed", "log.suppressed"]


def test_stall_records_are_never_cut(output: io.StringIO) -> None:
    """Every stall must be logged: `prompt.*` events are exempt from the limit."""
    limiter = LogLimiter(burst=1, clock=FakeClock())
    configure("json", "info", output, limiter=limiter)
    log = structlog.get_logger("test")
    for i in range(50):
        log.warning("prompt.stalled", server="oc", message_id=f"msg_{i}")
    assert len(lines(output)) == 50


@pytest.mark.anyio
async def test_5000_malformed_lines_from_a_server_log_a_few_lines_and_count_all(
    output: io.StringIO,
) -> None:
    """Through the daemon: 5 000 malformed lines are all counted in the metric, while the log gets
    the first five and, at shutdown, one summary."""

    async def handler(request: Request, stream: ByteStream) -> None:
        if request.path != "/global/event":
            await answer_json(stream, b"[]")
            return
        await stream.send(SSE_HEAD + CONNECTED)
        await stream.send(b"".join(b"data: {not json %d\n\n" % i for i in range(5000)))
        await stream.send(HEARTBEAT)
        await anyio.sleep_forever()

    configure("json", "info", output, limiter=LogLimiter(clock=FakeClock()))
    async with hostile_server(handler) as url:
        daemon = Daemon(Config(servers=(ServerConfig("oc", url),), listen_port=0, timeouts=FAST))
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await wait_for(
                lambda: (
                    sample(daemon, "opencode_watchdog_malformed_events_total", server="oc")
                    == 5000.0
                ),
                "all 5000 counted",
            )
            tg.cancel_scope.cancel()
    got = lines(output)
    malformed = [e for e in got if e["event"] == "event.malformed"]
    assert len(malformed) == 5
    [summary] = [e for e in got if e["event"] == "log.suppressed"]
    assert summary["count"] == 4995
    assert len(got) < 30


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
