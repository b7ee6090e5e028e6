"""The daemon's I/O edges in-process: httpx.MockTransport stands in for OpenCode, the endpoint is real."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.conftest import FIXTURES, wait_for
from watchdog.app.config import Config
from watchdog.app.daemon import Daemon
from watchdog.core.settings import ServerConfig, Timeouts
from watchdog.io.backoff import Backoff
from watchdog.io.outbox import Letter, Outbox
from watchdog.io.source import (
    AuthError,
    ClosedError,
    EventSource,
    ProtocolError,
    SilentError,
    StreamPath,
    UnreachableError,
)
from watchdog.sinks.metrics import Metrics

pytestmark = pytest.mark.anyio

SSE = {"content-type": "text/event-stream"}
FAST = Timeouts(first_response=0.3, inactivity=0.3, tool=5.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def frames(scenario: str, version: str = "1.18.33", stream: str = "global-event") -> list[bytes]:
    text = (FIXTURES / version / f"{scenario}.{stream}.sse").read_text(encoding="utf-8")
    return [(line + "\n\n").encode() for line in text.splitlines() if line.startswith("data: ")]


async def finite(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """Send the chunks, then end the body as a server closing the stream would."""
    for chunk in chunks:
        yield chunk


async def hold_open(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """Send the chunks, then keep the connection open like a live server."""
    for chunk in chunks:
        yield chunk
    await anyio.sleep_forever()


def daemon_for(handler: Callable[[httpx.Request], Any], **config: Any) -> Daemon:
    settings: dict[str, Any] = {
        "servers": (ServerConfig("oc", "http://oc.test", password="s3cret-pw"),),
        "listen_port": 0,
        "timeouts": FAST,
        **config,
    }
    return Daemon(Config(**settings), transport=httpx.MockTransport(handler))


def sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.registry.get_sample_value(name, labels)


async def test_hang_is_reported_and_served_on_metrics_healthz_status() -> None:
    """A hung prompt on the stream becomes a no_response stall in logs, /metrics and /status."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"].startswith("Basic ")
        hang = [f for f in frames("hang") if b"server.heartbeat" not in f]
        return httpx.Response(200, headers=SSE, content=hold_open(hang))

    daemon = daemon_for(handler)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            port = await tg.start(daemon.run)
            await wait_for(
                lambda: any(e["event"] == "prompt.stalled" for e in logs), "the stall log"
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                metrics = (await client.get("/metrics")).text
                health = await client.get("/healthz")
                status = (await client.get("/status")).json()
                missing = await client.get("/nope")
            tg.cancel_scope.cancel()
    stall = next(e for e in logs if e["event"] == "prompt.stalled")
    assert stall["kind"] == "no_response"
    assert stall["session_id"].startswith("ses_")
    assert 'opencode_watchdog_stalls_total{kind="no_response",server="oc"} 1.0' in metrics
    assert 'opencode_watchdog_prompts_pending{server="oc",state="stalled"} 1.0' in metrics
    assert 'opencode_watchdog_stream_up{server="oc"} 1.0' in metrics
    assert health.status_code == 200
    assert health.json()["servers"]["oc"]["live"] is True
    pending = status["servers"][0]["pending"]
    assert [p["state"] for p in pending] == ["stalled"]
    assert pending[0]["message_id"] == stall["message_id"]
    assert missing.status_code == 404
    assert "s3cret-pw" not in json.dumps(logs)


async def test_dropped_stream_reconnects_and_counts() -> None:
    """A stream the server closes is reopened; reconnects are counted and the stream is up again."""
    connections = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal connections
        if request.url.path == "/api/info":  # api = "auto" asks first: a 1.x server has none
            return httpx.Response(404)
        connections += 1
        greeting = frames("normal")[:1]
        body = finite(greeting) if connections == 1 else hold_open(greeting)
        return httpx.Response(200, headers=SSE, content=body)

    daemon = daemon_for(handler)
    for watch in daemon.watches:
        watch._backoff = Backoff(base=0.01, cap=0.01)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await wait_for(lambda: connections >= 2, "a second connection")
            await wait_for(
                lambda: sample(daemon, "opencode_watchdog_stream_up", server="oc") == 1.0,
                "the stream up again",
            )
            tg.cancel_scope.cancel()
    assert sample(daemon, "opencode_watchdog_stream_reconnects_total", server="oc") == 1.0
    down = next(e for e in logs if e["event"] == "stream.down")
    assert "closed the stream" in down["error"]


async def test_wrong_password_is_an_auth_error_without_the_password() -> None:
    """401 is reported as an authentication problem; the daemon stays up; no password in output."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"www-authenticate": 'Basic realm="Secure Area"'})

    daemon = daemon_for(handler)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            port = await tg.start(daemon.run)
            await wait_for(lambda: any(e["event"] == "stream.down" for e in logs), "stream.down")
            async with httpx.AsyncClient() as client:
                health = await client.get(f"http://127.0.0.1:{port}/healthz")
            tg.cancel_scope.cancel()
    down = next(e for e in logs if e["event"] == "stream.down")
    assert down["log_level"] == "error"
    assert "check the username and password" in down["error"]
    assert health.status_code == 503
    assert health.json()["servers"]["oc"]["state"] == "auth_failed"
    assert "s3cret-pw" not in json.dumps(logs)


async def test_source_falls_back_to_event_on_older_servers() -> None:
    """A server without /global/event (404) is read through /event."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/global/event":
            return httpx.Response(404)
        return httpx.Response(200, headers=SSE, content=finite(frames("normal", stream="event")))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        source = EventSource(client, "http://oc.test/")
        got: list[str] = []
        with pytest.raises(ClosedError):
            async with source.connect() as batches:
                async for batch in batches:
                    for data in batch:
                        assert isinstance(data, str)
                        got.append(data)
    assert paths == ["/global/event", "/event"]
    assert source.path is StreamPath.DIRECTORY
    assert json.loads(got[0])["type"] == "server.connected"


@pytest.mark.parametrize(
    ("response", "error", "text"),
    [
        (httpx.Response(403), AuthError, "answered 403"),
        (
            httpx.Response(200, headers={"content-type": "text/html"}),
            ProtocolError,
            "not an event stream",
        ),
        (httpx.Response(502), ProtocolError, "HTTP 502"),
    ],
)
async def test_source_translates_bad_answers(
    response: httpx.Response, error: type[Exception], text: str
) -> None:
    """Bad HTTP answers become typed StreamErrors with a clear message."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: response)) as client:
        with pytest.raises(error, match=text):
            async with EventSource(client, "http://oc.test").connect():
                pass


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("Connection refused"), UnreachableError),
        (httpx.ReadTimeout("timed out"), SilentError),
    ],
)
async def test_source_translates_transport_errors(exc: Exception, error: type[Exception]) -> None:
    """httpx exceptions never leave source.py: refused connections and silence are typed."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(error):
            async with EventSource(client, "http://oc.test").connect():
                pass


async def test_malformed_and_unknown_events_are_counted_not_fatal() -> None:
    """Garbage lines and unknown types are counted and logged; the stream keeps going."""
    lines = [
        b"data: {not json\n\n",
        b'data: {"payload":{"type":"shiny.new","properties":{}}}\n\n',
        *frames("normal"),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=hold_open(lines))

    daemon = daemon_for(handler)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await wait_for(
                lambda: (
                    sample(
                        daemon,
                        "opencode_watchdog_prompts_completed_total",
                        server="oc",
                        outcome="answered",
                    )
                    == 1.0
                ),
                "the normal reply to complete",
            )
            tg.cancel_scope.cancel()
    assert sample(daemon, "opencode_watchdog_malformed_events_total", server="oc") == 1.0
    assert sample(daemon, "opencode_watchdog_events_total", server="oc", type="shiny.new") == 1.0
    assert [e["reason"] for e in logs if e["event"] == "event.malformed"] == ["invalid JSON"]


def test_event_type_label_is_bounded() -> None:
    """Past the cap, new event types share the label `other`."""
    metrics = Metrics(CollectorRegistry(), list, event_type_cap=3)
    for i in range(10):
        metrics.count_event("oc", f"type.{i}")
    values = {
        s.labels["type"]: s.value
        for s in next(iter(metrics.events.collect())).samples
        if s.name.endswith("_total")
    }
    assert values == {"type.0": 1.0, "type.1": 1.0, "type.2": 1.0, "other": 7.0}


async def test_outbox_retries_then_delivers() -> None:
    """A receiver failing twice gets the same body a third time; results are counted."""
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(500 if len(bodies) < 3 else 204)

    results: list[str] = []

    async def no_sleep(_: float) -> None:
        return None

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        outbox = Outbox(
            "webhook", "http://hook.test/x/TOKEN", client, count=results.append, sleep=no_sleep
        )
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(outbox.run)
                assert outbox.put(Letter(body={"status": "firing"}, what="t"))
                await outbox.drain(5.0)
                tg.cancel_scope.cancel()
    assert bodies == [{"status": "firing"}] * 3
    assert results == ["retried", "retried", "delivered"]
    assert "TOKEN" not in json.dumps(logs)


async def test_outbox_full_queue_drops_and_counts() -> None:
    """A queue that is full drops the new letter instead of blocking the tracker."""
    results: list[str] = []
    async with httpx.AsyncClient() as client:
        outbox = Outbox("webhook", "http://hook.test", client, count=results.append, max_queue=1)
        assert outbox.put(Letter(body={}, what="a"))
        assert not outbox.put(Letter(body={}, what="b"))
    assert results == ["dropped"]


async def test_evictions_are_exported_per_server() -> None:
    """Prompts evicted by the memory limit show in opencode_watchdog_evictions_total."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=hold_open(frames("normal")[:1]))

    daemon = daemon_for(handler)
    tracker = daemon.watches[0].tracker
    tracker.evicted_prompts = 3
    assert sample(daemon, "opencode_watchdog_evictions_total", server="oc", what="prompts") == 3.0
    assert sample(daemon, "opencode_watchdog_evictions_total", server="oc", what="sessions") == 0.0


async def test_head_request_gets_headers_without_a_body() -> None:
    """HEAD /metrics answers like GET, minus the body (what `curl -I` and probes send)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=hold_open(frames("normal")[:1]))

    daemon = daemon_for(handler)
    async with anyio.create_task_group() as tg:
        port = await tg.start(daemon.run)
        async with httpx.AsyncClient() as client:
            head = await client.head(f"http://127.0.0.1:{port}/metrics")
            get = await client.get(f"http://127.0.0.1:{port}/metrics")
        tg.cancel_scope.cancel()
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert get.content.startswith(b"# HELP")


async def test_sighup_reload_swaps_servers_and_sinks_and_keeps_pending_prompts() -> None:
    """A reload that moves server `oc` to a new URL, adds `two` and a webhook keeps oc's hung
    prompt (same tracker, no new acceptance), follows both servers and alerts the new webhook."""
    hooks: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "hook.test":
            hooks.append(json.loads(request.content))
            return httpx.Response(204)
        if request.url.path != "/global/event":
            return httpx.Response(404)
        hang = [f for f in frames("hang") if b"server.heartbeat" not in f]
        body = hang if request.url.host == "oc.test" else frames("normal")[:1]
        return httpx.Response(200, headers=SSE, content=hold_open(body))

    slow = Timeouts(first_response=600, inactivity=600, tool=600)
    first = Config(servers=(ServerConfig("oc", "http://oc.test"),), listen_port=0, timeouts=slow)
    fresh = Config(
        servers=(ServerConfig("oc", "http://oc-new.test"), ServerConfig("two", "http://two.test")),
        listen_port=0,
        timeouts=FAST,
        webhooks=("http://hook.test/alerts",),
    )
    daemon = Daemon(first, transport=httpx.MockTransport(handler), reload=lambda: fresh)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await wait_for(lambda: daemon.watches[0].tracker.pending_count == 1, "the hung prompt")
        tracker = daemon.watches[0].tracker
        daemon.reload_config()
        assert [w.name for w in daemon.watches] == ["oc", "two"]
        assert daemon.watches[0].tracker is tracker
        assert daemon.watches[0].url == "http://oc-new.test"
        await wait_for(lambda: len(hooks) == 1, "the stall on the new webhook")
        await wait_for(
            lambda: sample(daemon, "opencode_watchdog_stream_up", server="two") == 1.0, "two up"
        )
        tg.cancel_scope.cancel()
    assert hooks[0]["status"] == "firing"
    assert hooks[0]["server"] == "oc"
    assert sample(daemon, "opencode_watchdog_prompts_accepted_total", server="oc") == 1.0
