"""The Alertmanager sink's alert documents, resends and delivery, against httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from tests.conftest import wait_for
from watchdog.core.transitions import (
    Completed,
    Outcome,
    PromptRef,
    Resolved,
    Retry,
    Stalled,
    StallKind,
    Transition,
)
from watchdog.sinks.alertmanager import AlertmanagerSink, alerts_url

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
REF = PromptRef(
    server="oc",
    session_id="ses_1",
    message_id="msg_1",
    accepted_at=T0,
    directory="/work/app",
    provider="anthropic",
    model="claude-sonnet-4",
)
STALL = Stalled(prompt=REF, kind=StallKind.NO_RESPONSE, at=T0 + 300, waited=300.0)
LABELS = {
    "alertname": "OpenCodePromptStalled",
    "server": "oc",
    "kind": "no_response",
    "session_id": "ses_1",
    "message_id": "msg_1",
    "severity": "warning",
    "directory": "/work/app",
}
ANNOTATIONS = {
    "summary": "A prompt on OpenCode server oc got no response in 300 s.",
    "description": (
        "Session ses_1, message msg_1 on server oc (directory /work/app): no first response "
        "from the model 300 s after the prompt was accepted. "
        "Provider anthropic, model claude-sonnet-4."
    ),
}
GENERATOR = "http://127.0.0.1:9464/status"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Post:
    """One request the fake Alertmanager received."""

    url: str
    headers: httpx.Headers
    alerts: list[dict[str, Any]]


@dataclass
class FakeAlertmanager:
    """Records every POST and answers 200, as Alertmanager does."""

    posts: list[Post] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.posts.append(Post(str(request.url), request.headers, json.loads(request.content)))
        return httpx.Response(200)

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for post in self.posts for alert in post.alerts]


class Clock:
    """A settable clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def deliver(sink: AlertmanagerSink, transitions: Iterable[Transition]) -> None:
    """Emit the transitions, then run the outboxes until every letter is delivered."""
    for transition in transitions:
        sink.emit(transition)
    async with anyio.create_task_group() as tg:
        for outbox in sink.outboxes:
            tg.start_soon(outbox.run)
        for outbox in sink.outboxes:
            await outbox.drain(10.0)
            assert outbox.in_flight == 0, "an outbox still holds letters"
        tg.cancel_scope.cancel()


def make_sink(
    client: httpx.AsyncClient,
    clock: Clock,
    *,
    urls: tuple[str, ...] = ("http://am.test:9093",),
    **options: Any,
) -> AlertmanagerSink:
    return AlertmanagerSink(
        urls, client, count=lambda result: None, generator_url=GENERATOR, clock=clock, **options
    )


async def test_stall_becomes_a_firing_alert() -> None:
    """A no_response stall is posted to /api/v2/alerts as a firing alert ending 4 resends later."""
    fake = FakeAlertmanager()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = make_sink(client, Clock(T0 + 301))
        await deliver(sink, [STALL])
    assert [p.url for p in fake.posts] == ["http://am.test:9093/api/v2/alerts"]
    assert fake.posts[0].headers["content-type"] == "application/json"
    assert "authorization" not in fake.posts[0].headers
    assert fake.posts[0].alerts == [
        {
            "labels": LABELS,
            "annotations": ANNOTATIONS,
            "startsAt": "2023-11-14T22:18:20.000Z",
            "endsAt": "2023-11-14T22:22:21.000Z",  # now (T0 + 301) + 4 x 60 s
            "generatorURL": GENERATOR,
        }
    ]


async def test_resolution_sends_the_same_labels_ending_now() -> None:
    """A Resolved re-posts the firing labels with endsAt = now, and the alert is forgotten."""
    fake = FakeAlertmanager()
    clock = Clock(T0 + 300)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = make_sink(client, clock)
        sink.emit(STALL)
        clock.now = T0 + 400
        resolved = Resolved(prompt=REF, kind=StallKind.NO_RESPONSE, at=T0 + 400, waited=400.0)
        await deliver(sink, [resolved])
    assert fake.posts[1].alerts == [
        {
            "labels": LABELS,
            "annotations": ANNOTATIONS,
            "startsAt": "2023-11-14T22:18:20.000Z",
            "endsAt": "2023-11-14T22:20:00.000Z",  # T0 + 400
            "generatorURL": GENERATOR,
        }
    ]
    assert sink.active == {}


async def test_resolution_uses_the_labels_that_fired() -> None:
    """A prompt whose directory became known after the stall is resolved under its old labels."""
    fake = FakeAlertmanager()
    anonymous = PromptRef(server="oc", session_id="ses_1", message_id="msg_1", accepted_at=T0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = make_sink(client, Clock(T0 + 400))
        stall = Stalled(prompt=anonymous, kind=StallKind.NO_RESPONSE, at=T0 + 300, waited=300)
        resolved = Resolved(prompt=REF, kind=StallKind.NO_RESPONSE, at=T0 + 400, waited=400)
        await deliver(sink, [stall, resolved])
    fired, ended = (p.alerts[0] for p in fake.posts)
    assert "directory" not in fired["labels"]
    assert ended["labels"] == fired["labels"]


async def test_completion_resolves_a_still_firing_alert() -> None:
    """A Completed prompt whose stall was never resolved has its alert ended (safety net)."""
    fake = FakeAlertmanager()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = make_sink(client, Clock(T0 + 500))
        done = Completed(prompt=REF, outcome=Outcome.ANSWERED, at=T0 + 500, duration=500)
        await deliver(sink, [STALL, done])
    assert [a["endsAt"] for a in fake.alerts()] == [
        "2023-11-14T22:25:40.000Z",  # T0 + 500 + 240
        "2023-11-14T22:21:40.000Z",  # T0 + 500: resolved
    ]
    assert fake.posts[1].alerts[0]["labels"] == LABELS
    assert sink.active == {}


async def test_resolution_of_an_unknown_alert_sends_nothing() -> None:
    """Resolved or Completed for a prompt with no firing alert posts nothing."""
    fake = FakeAlertmanager()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = make_sink(client, Clock(T0 + 400))
        resolved = Resolved(prompt=REF, kind=StallKind.INACTIVE, at=T0 + 400, waited=400)
        done = Completed(prompt=REF, outcome=Outcome.ANSWERED, at=T0 + 400, duration=400)
        await deliver(sink, [resolved, done])
    assert fake.posts == []


async def test_dropped_prompt_is_one_alert_with_a_finite_end() -> None:
    """A dropped prompt is posted once as OpenCodePromptDropped ending an hour after it fired."""
    fake = FakeAlertmanager()
    dropped = Stalled(
        prompt=REF, kind=StallKind.DROPPED, at=T0 + 120, waited=120, reason="idle_without_reply"
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = make_sink(client, Clock(T0 + 121))
        sink.emit(dropped)
        sink.resend()
        await deliver(sink, [])
    assert fake.alerts() == [
        {
            "labels": {**LABELS, "alertname": "OpenCodePromptDropped", "kind": "dropped"},
            "annotations": {
                "summary": "OpenCode server oc dropped a prompt without finishing its reply.",
                "description": (
                    "Session ses_1, message msg_1 on server oc (directory /work/app): the session "
                    "went idle 120 s after the prompt was accepted, reply unfinished. "
                    "Reason: idle_without_reply. Provider anthropic, model claude-sonnet-4."
                ),
            },
            "startsAt": "2023-11-14T22:15:20.000Z",  # T0 + 120
            "endsAt": "2023-11-14T23:15:20.000Z",  # an hour later
            "generatorURL": GENERATOR,
        }
    ]
    assert sink.active == {}


async def test_resend_loop_reposts_firing_alerts_with_a_fresh_end() -> None:
    """run() posts what fires when it starts (a sink added by a reload learns it), then every
    resend interval again, with endsAt moved forward."""
    fake = FakeAlertmanager()
    clock = Clock(T0 + 300)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 2:
            await anyio.sleep_forever()
        clock.now += seconds

    inactive = Stalled(
        prompt=REF,
        kind=StallKind.INACTIVE,
        at=T0 + 300,
        waited=300,
        retry=Retry(attempt=3, message="Rate limited", next_at=None),
    )
    resolved = Resolved(prompt=REF, kind=StallKind.NO_RESPONSE, at=T0 + 300, waited=300)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = make_sink(client, clock, resend_interval=30.0, sleep=sleep)
        for transition in (STALL, resolved, inactive):
            sink.emit(transition)
        async with anyio.create_task_group() as tg:
            for outbox in sink.outboxes:
                tg.start_soon(outbox.run)
            tg.start_soon(sink.run)
            await wait_for(lambda: len(fake.posts) == 6, "a send at start and two resends")
            tg.cancel_scope.cancel()
    assert slept == [30.0, 30.0, 30.0]
    firing, at_start, resend_1, resend_2 = fake.posts[2:]
    assert at_start.alerts == firing.alerts
    assert resend_1.alerts == [{**firing.alerts[0], "endsAt": "2023-11-14T22:20:50.000Z"}]
    assert resend_2.alerts == [{**firing.alerts[0], "endsAt": "2023-11-14T22:21:20.000Z"}]
    assert firing.alerts[0]["endsAt"] == "2023-11-14T22:20:20.000Z"  # T0 + 300 + 4 x 30 s
    assert firing.alerts[0]["labels"]["kind"] == "inactive"
    assert firing.alerts[0]["annotations"]["description"].endswith(
        "Provider anthropic, model claude-sonnet-4. "
        "OpenCode is retrying the provider (attempt 3): Rate limited."
    )


async def test_every_alertmanager_gets_every_alert() -> None:
    """With two Alertmanager URLs (one behind a path prefix) each receives the same alerts."""
    fake = FakeAlertmanager()
    urls = ("http://am-0.test:9093", "https://proxy.test/alertmanager/")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = make_sink(client, Clock(T0 + 301), urls=urls)
        await deliver(sink, [STALL])
    assert sorted(p.url for p in fake.posts) == [
        "http://am-0.test:9093/api/v2/alerts",
        "https://proxy.test/alertmanager/api/v2/alerts",
    ]
    assert fake.posts[0].alerts == fake.posts[1].alerts
    assert [o.url for o in sink.outboxes] == sorted(p.url for p in fake.posts)


@pytest.mark.parametrize(
    ("options", "header", "secret"),
    [
        ({"basic_auth": ("watchdog", "s3cret-pw")}, "Basic d2F0Y2hkb2c6czNjcmV0LXB3", "s3cret-pw"),
        ({"bearer_token": "tok-123456"}, "Bearer tok-123456", "tok-123456"),
    ],
)
async def test_auth_header_is_sent_and_never_logged(
    options: dict[str, Any], header: str, secret: str
) -> None:
    """Basic or bearer credentials go in the Authorization header and appear in no log event."""
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        assert request.headers["authorization"] == header
        # A first failure makes the outbox log the delivery (retrying), with its context.
        return httpx.Response(503 if posts == 1 else 200)

    async def no_sleep(_: float) -> None:
        return None

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sink = AlertmanagerSink(
            ["http://am.test:9093"], client, count=lambda result: None, **options
        )
        for outbox in sink.outboxes:
            outbox._sleep = no_sleep
        with capture_logs() as logs:
            await deliver(sink, [STALL])
    assert posts == 2
    assert [e["event"] for e in logs] == ["alert.retrying", "alert.delivered"]
    assert secret not in json.dumps(logs)
    assert "d2F0Y2hkb2c6czNjcmV0LXB3" not in json.dumps(logs)


def test_basic_and_bearer_auth_together_are_refused() -> None:
    """Giving both kinds of credentials is a programming error, raised at construction."""
    with pytest.raises(ValueError, match="not both"):
        AlertmanagerSink(
            ["http://am.test"],
            httpx.AsyncClient(),
            count=lambda result: None,
            basic_auth=("u", "p"),
            bearer_token="t",
        )


async def test_alerts_past_the_cap_fire_once_and_are_counted() -> None:
    """Beyond max_active, a new stall is sent once but not re-sent; it is counted and logged."""
    fake = FakeAlertmanager()
    results: list[str] = []
    second = PromptRef(server="oc", session_id="ses_2", message_id="msg_2", accepted_at=T0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        sink = AlertmanagerSink(
            ["http://am.test:9093"],
            client,
            count=results.append,
            clock=Clock(T0 + 300),
            max_active=1,
        )
        with capture_logs() as logs:
            sink.emit(STALL)
            sink.emit(Stalled(prompt=second, kind=StallKind.NO_RESPONSE, at=T0 + 300, waited=300))
            sink.resend()
            await deliver(sink, [])
    sent = [a["labels"]["session_id"] for a in fake.alerts()]
    assert sent == ["ses_1", "ses_2", "ses_1"]
    assert sink.untracked == 1
    assert results.count("untracked") == 1
    untracked = next(e for e in logs if e["event"] == "alert.untracked")
    assert "ses_2" in untracked["what"]


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://am:9093", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/api/v2/alerts", "http://am:9093/api/v2/alerts"),
        ("https://u:p@proxy/am/", "https://u:p@proxy/am/api/v2/alerts"),
    ],
)
def test_alerts_url_appends_the_v2_path_once(base: str, url: str) -> None:
    """A base URL, with or without a prefix or the API path already, maps to its alerts endpoint."""
    assert alerts_url(base) == url
