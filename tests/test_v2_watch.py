"""Watching an OpenCode 2 server in-process: the `api` setting, detection by `GET /api/info`,
`/api/event` with its heartbeat comments as liveness, recovery from OpenCode 2's REST, and the
API per server in `/status` and the metrics. httpx.MockTransport stands in for the server; the
REST answers are shaped after the upstream schema (synthetic: no real answer was copied)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from tests.conftest import wait_for
from watchdog.app import watch as watch_module
from watchdog.app.config import Config, RawOptions, load
from watchdog.app.daemon import Daemon
from watchdog.core.events import SessionRun
from watchdog.core.server import ServerCore
from watchdog.core.settings import ApiMode, ConfigError, ServerConfig, Timeouts
from watchdog.core.transitions import Completed, Outcome
from watchdog.io.source import AuthError, ServerApi
from watchdog.io.sse import SSESplitter
from watchdog.io.v2 import detect_api, read_snapshots_v2
from watchdog.opencode.v2 import V2Stream
from watchdog.opencode.v2_rest import api_of_info, decode_messages

FIXTURES = Path(__file__).parent / "fixtures" / "opencode2"
JSON = {"content-type": "application/json"}
SSE = {"content-type": "text/event-stream"}
FAST = Timeouts(first_response=0.3, inactivity=0.3, tool=5.0)
SID = "ses_0f2244b600015URYX45jqRO25g"  # the session of answered.api-event.sse


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- configuration ---------------------------------------------------------------------------


def test_api_is_auto_by_default_and_set_by_flag_variable_or_per_server(tmp_path: Path) -> None:
    assert load(RawOptions(), {}).servers[0].api is ApiMode.AUTO
    assert load(RawOptions(api="v2"), {}).servers[0].api is ApiMode.V2
    assert load(RawOptions(), {"OPENCODE_WATCHDOG_API": "V1"}).servers[0].api is ApiMode.V1
    file = tmp_path / "w.toml"
    file.write_text(
        'api = "v1"\n[[servers]]\nurl = "http://a:1"\napi = "v2"\n[[servers]]\nurl = "http://b:2"\n'
    )
    servers = load(RawOptions(config=str(file)), {}).servers
    assert [s.api for s in servers] == [ApiMode.V2, ApiMode.V1]


def test_a_bad_api_value_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--api: expected one of auto, v1, v2"):
        load(RawOptions(api="v3"), {})
    file = tmp_path / "w.toml"
    file.write_text('[[servers]]\nurl = "http://a:1"\napi = 2\n')
    with pytest.raises(ConfigError, match=r"servers\[0\]\.api: expected one of"):
        load(RawOptions(config=str(file)), {})


# -- detection -------------------------------------------------------------------------------


def api_for(handler: Callable[[httpx.Request], httpx.Response]) -> ServerApi:
    return ServerApi(httpx.AsyncClient(transport=httpx.MockTransport(handler)), "http://oc.test")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(200, headers=JSON, json={"version": "2.0.18", "pid": 7}), ("v2", "2.0.18")),
        (httpx.Response(200, headers=JSON, json={"version": "v2.1.0"}), ("v2", "v2.1.0")),
        # What 1.18.33 answers (measured): its web app's page, 200 text/html.
        (
            httpx.Response(200, headers={"content-type": "text/html"}, text="<!doctype html>"),
            ("v1", None),
        ),
        (httpx.Response(404), ("v1", None)),
        (httpx.Response(200, headers=JSON, json={"version": "1.18.33"}), ("v1", None)),
        (httpx.Response(200, headers=JSON, json={"healthy": True}), ("v1", None)),
        (httpx.Response(200, headers=JSON, text="not json"), ("v1", None)),
        # An endless stream is refused by its content type, not read.
        (httpx.Response(200, headers=SSE, text="data: {}\n\n"), ("v1", None)),
    ],
)
async def test_detection_by_api_info(
    response: httpx.Response, expected: tuple[str, str | None]
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return response

    info = await detect_api(api_for(handler))
    assert (info.api, info.version) == expected
    assert info.pid == (7 if expected == ("v2", "2.0.18") else None)
    assert seen == ["/api/info"]


@pytest.mark.anyio
async def test_detection_with_wrong_credentials_is_an_auth_error() -> None:
    with pytest.raises(AuthError):
        await detect_api(api_for(lambda _: httpx.Response(401)))


def test_only_a_version_of_2_or_later_is_opencode_2() -> None:
    assert api_of_info({"version": "2.0.0"}) == "v2"
    assert api_of_info({"version": "10.1.2"}) == "v2"
    assert api_of_info({"version": "0.0.0-beta-17823"}) is None  # the betas: set api = "v2"
    assert api_of_info({"version": 2}) is None
    assert api_of_info(["2.0.0"]) is None


# -- the heartbeat comment -------------------------------------------------------------------


def test_the_splitter_passes_comments_on_only_when_asked() -> None:
    body = b': heartbeat\n\ndata: {"a":1}\n\n: heartbeat\n\n'
    assert SSESplitter(comments=True).feed(body) == ["", '{"a":1}', ""]
    assert SSESplitter().feed(body) == ['{"a":1}']
    # A comment inside an event with data is no extra event.
    assert SSESplitter(comments=True).feed(b": note\ndata: x\n\n") == ["x"]


# -- recovery --------------------------------------------------------------------------------


def timeline(prompt: str, *, answered: bool) -> dict[str, Any]:
    """`GET /api/session/{id}/message?order=desc`, newest first, after the 2.0.19 timeline's
    shape: the user message, an assistant step that called a tool, a final step, an idle marker."""
    items: list[dict[str, Any]] = [
        {"id": prompt, "type": "user", "time": {"created": 1790768867437}, "text": "[prompt]"},
        {
            "id": "msg_step1",
            "type": "assistant",
            "time": {"created": 1790768867474, "completed": 1790768895785},
            "content": [
                {"type": "tool", "id": "call_1", "name": "shell", "state": {"status": "completed"}}
            ],
            "finish": "tool-calls",
        },
    ]
    if answered:
        items += [
            {
                "id": "msg_step2",
                "type": "assistant",
                "time": {"created": 1790768895795, "completed": 1790768898890},
                "content": [{"type": "text", "text": "[reply]"}],
                "finish": "stop",
            },
            {"id": "msg_idle", "type": "idle", "time": {"created": 1790768898893}},
        ]
    else:
        items.append(
            {
                "id": "msg_step2",
                "type": "assistant",
                "time": {"created": 1790768895795},
                "content": [{"type": "tool", "id": "call_2", "state": {"status": "running"}}],
            }
        )
    return {"data": list(reversed(items)), "cursor": {}}


def test_a_timeline_gives_each_user_message_the_steps_after_it() -> None:
    prompts = decode_messages(timeline("msg_u", answered=True), newest_first=True)
    assert prompts is not None
    assert [p.message_id for p in prompts] == ["msg_u"]
    assert [(r.message_id, r.completed, r.finish) for r in prompts[0].replies] == [
        ("msg_step1", True, "tool-calls"),
        ("msg_step2", True, "stop"),
    ]
    running = decode_messages(timeline("msg_u", answered=False), newest_first=True)
    assert running is not None
    assert running[0].replies[-1].running_tools == ("call_2",)
    assert decode_messages({"data": "nope"}, newest_first=True) is None


def rest_handler(
    prompt: str, *, running: bool, answered: bool
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/session/active":
            return httpx.Response(200, json={"data": {SID: {"type": "running"}} if running else {}})
        if path == f"/api/session/{SID}/message":
            assert request.url.params["order"] == "desc"
            return httpx.Response(200, json=timeline(prompt, answered=answered))
        if path == f"/api/session/{SID}/inbox":
            return httpx.Response(200, json={"data": []})
        if path == f"/api/session/{SID}/permission":
            return httpx.Response(
                200, json={"data": [{"id": "per_1", "sessionID": SID}]} if running else {"data": []}
            )
        return httpx.Response(404)

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("running", "answered", "outcome"),
    [(False, True, Outcome.ANSWERED), (False, False, Outcome.DROPPED), (True, False, None)],
)
async def test_after_a_reconnect_a_tracked_prompt_is_brought_up_to_date(
    running: bool, answered: bool, outcome: Outcome | None
) -> None:
    """A prompt seen accepted, then the stream broke: the read says how it ended (or that it runs,
    waiting for a person)."""
    core = ServerCore("oc2", V2Stream(), FAST)
    enqueued = json.dumps(
        {
            "created": 1790768867437,
            "type": "session.inbox.enqueued",
            "data": {"sessionID": SID, "inboxID": "msg_u", "item": {"type": "user"}},
        }
    )
    core.feed_line(enqueued, 1.0, 1790768867.5)
    core.feed_line(
        json.dumps({"type": "session.execution.started", "data": {"sessionID": SID}}),
        1.1,
        1790768867.6,
    )
    api = api_for(rest_handler("msg_u", running=running, answered=answered))
    snapshots = await read_snapshots_v2(
        api, tracked=core.tracker.pending_sessions(), taken_at=5.0, restarted=False
    )
    assert [s.run for s in snapshots] == [SessionRun.BUSY if running else SessionRun.IDLE]
    out = core.feed_snapshots(snapshots, 5.0, 1790768900.0)
    done = [t.outcome for t in out if isinstance(t, Completed)]
    assert done == ([] if outcome is None else [outcome])
    if running:
        assert core.tracker.pending_count == 1
        assert snapshots[0].waiting_on == ("per_1",)


@pytest.mark.anyio
async def test_unreadable_answers_leave_the_session_unknown_not_idle() -> None:
    api = api_for(lambda _: httpx.Response(500))
    snapshots = await read_snapshots_v2(api, tracked={SID: None}, taken_at=1.0, restarted=False)
    assert [(s.run, s.prompts, s.waiting_on) for s in snapshots] == [(None, None, None)]


# -- the daemon, end to end in-process -------------------------------------------------------


def v2_frames(name: str) -> list[bytes]:
    text = (FIXTURES / f"{name}.api-event.sse").read_text(encoding="utf-8")
    return [(block + "\n\n").encode() for block in text.split("\n\n") if block]


async def hold_open(
    chunks: list[bytes], then: Callable[[], AsyncIterator[bytes]] | None = None
) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if then is not None:
        async for chunk in then():
            yield chunk
    await anyio.sleep_forever()


def v2_server(
    chunks: list[bytes],
    *,
    then: Callable[[], AsyncIterator[bytes]] | None = None,
    version: str = "2.0.18",
    paths: list[str] | None = None,
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if paths is not None:
            paths.append(path)
        if path == "/api/info":
            return httpx.Response(
                200,
                headers=JSON,
                json={"version": version, "pid": 1, "urls": [], "paths": {"tmp": "/tmp"}},
            )
        if path == "/api/event":
            return httpx.Response(200, headers=SSE, content=hold_open(chunks, then))
        if path == "/api/session/active":
            return httpx.Response(200, json={"data": {}})
        if path.endswith(("/message", "/inbox", "/permission")):
            return httpx.Response(200, json={"data": []})
        return httpx.Response(404, headers={"content-type": "text/html"})

    return handler


def daemon_for(handler: Callable[[httpx.Request], httpx.Response], **server: Any) -> Daemon:
    config = Config(
        servers=(ServerConfig("oc2", "http://oc2.test", **server),),
        listen_port=0,
        timeouts=FAST,
    )
    return Daemon(config, transport=httpx.MockTransport(handler))


@pytest.mark.anyio
async def test_a_detected_opencode_2_server_is_followed_on_api_event() -> None:
    paths: list[str] = []
    daemon = daemon_for(v2_server(v2_frames("answered"), paths=paths))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await wait_for(
            lambda: (
                daemon.registry.get_sample_value(
                    "opencode_watchdog_prompts_completed_total",
                    {"server": "oc2", "outcome": "answered"},
                )
                == 1.0
            ),
            "the answered prompt",
        )
        status = daemon.status()
        metrics = generate_latest(daemon.registry).decode()
        page = daemon.page().decode()
        tg.cancel_scope.cancel()
    assert paths[:2] == ["/api/info", "/api/event"]
    assert "/global/event" not in paths
    server = status["servers"][0]
    assert (server["api"], server["api_mode"], server["server_version"]) == ("v2", "auto", "2.0.18")
    assert server["stream"]["path"] == "/api/event"
    assert 'opencode_watchdog_server_api{api="v2",server="oc2"} 1.0' in metrics
    assert '<p class="api">API v2</p>' in page


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "stream"), [("v2", "/api/event"), ("v1", "/global/event")])
async def test_api_v2_follows_api_event_whatever_api_info_says_and_api_v1_never_asks(
    mode: str, stream: str
) -> None:
    """`api = "v2"` reads /api/info only for the server's pid (here it answers 404) and follows
    /api/event; `api = "v1"` never asks and follows /global/event."""
    paths: list[str] = []
    serve = v2_server(v2_frames("answered"), paths=paths)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/info":
            paths.append("/api/info")
            return httpx.Response(404)
        return serve(request)

    daemon = daemon_for(handler, api=ApiMode(mode))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await wait_for(lambda: stream in paths, "the stream's request")
        tg.cancel_scope.cancel()
    assert next(p for p in paths if p != "/api/info") == stream
    assert ("/api/info" in paths) is (mode == "v2")
    assert daemon.watches[0].api_in_use == mode


@pytest.mark.anyio
async def test_heartbeat_comments_keep_a_quiet_stream_alive_and_their_absence_drops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The liveness window is three heartbeats (here 0.2 s each, the real 15 s scaled down):
    heartbeats every 0.2 s hold a stream whose liveness timeout (0.1 s) alone would drop it;
    when they stop, the stream is dropped as silent and reopened."""
    monkeypatch.setattr(watch_module, "V2_HEARTBEAT", 0.2)
    beats = 0

    async def heartbeats() -> AsyncIterator[bytes]:
        nonlocal beats
        for _ in range(8):
            await anyio.sleep(0.2)
            beats += 1
            yield b": heartbeat\n\n"

    greeting = v2_frames("answered")[:1]
    config = Config(
        servers=(ServerConfig("oc2", "http://oc2.test", api=ApiMode.V2),),
        listen_port=0,
        timeouts=FAST,
        liveness_timeout=0.1,
    )
    daemon = Daemon(config, transport=httpx.MockTransport(v2_server(greeting, then=heartbeats)))
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await wait_for(lambda: beats >= 8, "eight heartbeats")
            reconnects_while_beating = daemon.registry.get_sample_value(
                "opencode_watchdog_stream_reconnects_total", {"server": "oc2"}
            )
            await wait_for(
                lambda: any(e["event"] == "stream.down" for e in logs), "the silent stream dropped"
            )
            tg.cancel_scope.cancel()
    assert reconnects_while_beating == 0.0
    down = next(e for e in logs if e["event"] == "stream.down")
    assert "liveness window of 0.6 s" in down["error"]


@pytest.mark.anyio
async def test_the_probe_leaves_an_opencode_2_server_alone() -> None:
    """Once its API is known, a server speaking OpenCode 2 is no probe target; a 1.x one is."""
    handler = v2_server(v2_frames("answered"))

    def both(request: httpx.Request) -> httpx.Response:
        if request.url.host == "oc1.test" and request.url.path == "/api/info":
            return httpx.Response(200, headers={"content-type": "text/html"}, text="<html>")
        if request.url.host == "oc1.test":
            return httpx.Response(200, headers=SSE, content=hold_open([]))
        return handler(request)

    config = Config(
        servers=(
            ServerConfig("oc2", "http://oc2.test"),
            ServerConfig("oc1", "http://oc1.test"),
        ),
        listen_port=0,
        timeouts=FAST,
        probe_interval=3600.0,
    )
    daemon = Daemon(config, transport=httpx.MockTransport(both))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        for watch in daemon.watches:
            with anyio.fail_after(10):
                await watch.api_known.wait()
        targets = [s.name for s in daemon._probe_targets()]
        tg.cancel_scope.cancel()
    assert {w.name: w.api_in_use for w in daemon.watches} == {"oc2": "v2", "oc1": "v1"}
    assert targets == ["oc1"]
