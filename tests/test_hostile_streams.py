"""Issue 9, bounded memory and slow starts: attacks on a real loopback socket against the daemon."""

from __future__ import annotations

import anyio
import httpx
import pytest
from anyio.abc import ByteStream
from structlog.testing import capture_logs

from tests.conftest import wait_for
from tests.hostile import CONNECTED, HEARTBEAT, SSE_HEAD, Request, answer_json, head, hostile_server
from tests.test_daemon import FAST, sample
from watchdog.app.config import Config
from watchdog.app.daemon import Daemon
from watchdog.core.settings import ServerConfig
from watchdog.io.source import ServerApi, TooLargeError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def daemon_at(url: str, **config: object) -> Daemon:
    settings: dict[str, object] = {
        "servers": (ServerConfig("oc", url),),
        "listen_port": 0,
        "timeouts": FAST,
        **config,
    }
    return Daemon(Config(**settings))  # type: ignore[arg-type]


async def not_found(stream: ByteStream) -> None:
    await stream.send(head(404, {"content-length": "0"}))


async def test_a_line_that_never_ends_is_dead_air_for_liveness() -> None:
    """Bytes keep coming but no line ever ends: the liveness window still closes the stream
    (with a reason) and it is reopened; the bytes are not kept."""
    connections = 0

    async def handler(request: Request, stream: ByteStream) -> None:
        nonlocal connections
        if request.path != "/global/event":
            await not_found(stream)
            return
        connections += 1
        await stream.send(SSE_HEAD + CONNECTED + b"data: ")
        while True:
            await stream.send(b"x" * 65536)
            await anyio.sleep(0.001)

    async with hostile_server(handler) as url:
        daemon = daemon_at(url, liveness_timeout=0.5, max_event_bytes=64 * 1024)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                await wait_for(lambda: connections >= 2, "a reconnect after the endless line")
                tg.cancel_scope.cancel()
    down = next(e for e in logs if e["event"] == "stream.down")
    assert "no data within the liveness window of 0.5 s" in down["error"]


async def test_an_event_over_the_cap_is_skipped_and_counted_and_the_stream_goes_on() -> None:
    """A 5 MB event (cap 64 KiB) is skipped, counted and logged; the heartbeat after it counts."""

    async def handler(request: Request, stream: ByteStream) -> None:
        if request.path != "/global/event":
            await not_found(stream)
            return
        await stream.send(SSE_HEAD + CONNECTED + b"data: {")
        for _ in range(80):
            await stream.send(b"1" * 65536)
        await stream.send(b"}\n\n" + HEARTBEAT)
        await anyio.sleep_forever()

    async with hostile_server(handler) as url:
        daemon = daemon_at(url, max_event_bytes=64 * 1024)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                await wait_for(
                    lambda: (
                        sample(
                            daemon,
                            "opencode_watchdog_events_total",
                            server="oc",
                            type="server.heartbeat",
                        )
                        == 1.0
                    ),
                    "the heartbeat after the big event",
                )
                tg.cancel_scope.cancel()
    assert sample(daemon, "opencode_watchdog_oversized_total", server="oc", what="event") == 1.0
    big = next(e for e in logs if e["event"] == "event.oversized")
    # Reported as soon as it passed the cap (never buffered to its end), with the bytes seen then.
    assert big["size"] > 64 * 1024
    assert big["limit"] == 64 * 1024
    assert daemon.watches[0].status.state.value == "up"


async def test_a_rest_answer_over_the_cap_is_refused_before_it_is_read() -> None:
    """An answer past the cap (declared or streamed without a length) raises TooLargeError and is
    counted; the reading stops at the cap."""
    sent = 0

    async def handler(request: Request, stream: ByteStream) -> None:
        nonlocal sent
        if request.path == "/declared":
            await answer_json(stream, b"[" + b"0," * 1_000_000 + b"0]")
            return
        await stream.send(head(200, {"content-type": "application/json"}) + b"[")
        while True:  # no content-length: the body runs until we hang up
            await stream.send(b"0," * 32768)
            sent += 65536

    counted: list[None] = []
    async with hostile_server(handler) as url, httpx.AsyncClient() as client:
        api = ServerApi(
            client, url, max_body_bytes=256 * 1024, on_too_large=lambda: counted.append(None)
        )
        with pytest.raises(TooLargeError, match="more than 262144 bytes"):
            await api.get("/declared")
        with pytest.raises(TooLargeError):
            await api.get("/endless")
    assert len(counted) == 2
    assert sent < 64 * 1024 * 1024  # we hung up; the server did not get to send without end


async def test_reconcile_skips_a_huge_answer_and_counts_it() -> None:
    """After connecting, a huge `/session/status` is skipped and counted; the daemon goes on."""

    async def handler(request: Request, stream: ByteStream) -> None:
        if request.path == "/global/event":
            await stream.send(SSE_HEAD + CONNECTED)
            await anyio.sleep_forever()
        if request.path == "/session/status":
            await answer_json(stream, b'{"x":"' + b"y" * 2_000_000 + b'"}')
            return
        await answer_json(stream, b"[]")

    async with hostile_server(handler) as url:
        daemon = daemon_at(url, max_body_bytes=64 * 1024)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                await wait_for(
                    lambda: any(e["event"] == "reconcile.done" for e in logs), "reconcile done"
                )
                tg.cancel_scope.cancel()
    assert sample(daemon, "opencode_watchdog_oversized_total", server="oc", what="answer") == 1.0
    failed = next(e for e in logs if e["event"] == "reconcile.read_failed")
    assert failed["what"] == "status"
    assert "more than 65536 bytes" in failed["error"]
    assert sample(daemon, "opencode_watchdog_reconcile_failures_total", server="oc", what="status")


async def test_headers_that_never_come_time_out_and_show_connecting() -> None:
    """A server that accepts but sends no headers (still booting) is given up on after the short
    headers timeout, not the liveness window; meanwhile /healthz and /status say connecting."""
    connections = 0

    async def handler(request: Request, stream: ByteStream) -> None:
        nonlocal connections
        if request.path != "/global/event":
            await answer_json(stream, b"[]")
            return
        connections += 1
        if connections == 1:
            await anyio.sleep_forever()  # booting: connection accepted, no answer
        await stream.send(SSE_HEAD + CONNECTED)
        while True:
            await anyio.sleep(0.05)
            await stream.send(HEARTBEAT)

    async with hostile_server(handler) as url:
        daemon = daemon_at(url, liveness_timeout=120.0, headers_timeout=0.5)
        async with anyio.create_task_group() as tg:
            port = await tg.start(daemon.run)
            await wait_for(lambda: connections == 1, "the first connection")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                health = await client.get("/healthz")
                status = (await client.get("/status")).json()
            await wait_for(
                lambda: daemon.watches[0].status.state.value == "up", "the stream up", timeout=20
            )
            tg.cancel_scope.cancel()
    assert health.status_code == 503
    assert health.json()["servers"]["oc"]["reason"] == "connecting"
    assert status["servers"][0]["stream"]["state"] == "connecting"
    assert daemon.watches[0].status.reconnects == 1
