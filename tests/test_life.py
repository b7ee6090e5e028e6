"""The daemon's own life never fakes, loses or strands an alert: limits, reloads, removed servers.

In-process: the daemon is built from a real configuration, lines of OpenCode 1.x events are fed to
its watches as the stream would, the timers are ticked by hand (no waiting), and a recording sink
stands beside the real ones.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from tests.conftest import FIXTURES, wait_for
from watchdog.app.cli import main
from watchdog.app.config import RawOptions, load
from watchdog.app.daemon import Daemon
from watchdog.core.clock import iso
from watchdog.core.settings import ConfigError, Limits, ProbeShape
from watchdog.core.transitions import Completed, Outcome, Resolved, Stalled, Transition
from watchdog.io.probe import ProbeResult, Step, StepTiming

pytestmark = pytest.mark.anyio

DIRECTORY = "/srv/proj"
SSE = {"content-type": "text/event-stream"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(kind: str, properties: dict[str, Any]) -> str:
    """One line of `/global/event` as OpenCode 1.x sends it."""
    return json.dumps({"directory": DIRECTORY, "payload": {"type": kind, "properties": properties}})


def prompt(session: str, message: str, created_ms: int) -> list[str]:
    """A user message stored, and its session's loop starting."""
    return [
        event(
            "session.updated",
            {"info": {"id": session, "directory": DIRECTORY, "title": "work"}},
        ),
        event(
            "message.updated",
            {
                "sessionID": session,
                "info": {
                    "id": message,
                    "role": "user",
                    "sessionID": session,
                    "time": {"created": created_ms},
                },
            },
        ),
        event("session.status", {"sessionID": session, "status": {"type": "busy"}}),
    ]


class Recording:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.seen: list[Transition] = []

    def emit(self, transition: Transition) -> None:
        self.seen.append(transition)

    def kinds(self) -> list[str]:
        out = []
        for t in self.seen:
            if isinstance(t, Stalled | Resolved):
                out.append(f"{type(t).__name__.lower()}:{t.kind.value}:{t.prompt.message_id}")
            elif isinstance(t, Completed):
                out.append(f"completed:{t.outcome.value}:{t.prompt.message_id}")
        return out


class Clock:
    """The daemon's clocks, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.wall = 1_800_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


def build(options: RawOptions, clock: Clock, **kwargs: Any) -> tuple[Daemon, Recording]:
    config = load(options, {})
    daemon = Daemon(
        config,
        clock=lambda: clock.wall,
        monotonic=lambda: clock.now,
        transport=httpx.MockTransport(lambda request: httpx.Response(503)),
        **kwargs,
    )
    recording = Recording()
    daemon.alerting.sinks.append(recording)
    return daemon, recording


def feed(daemon: Daemon, clock: Clock, lines: list[str], server: int = 0) -> None:
    watch = daemon.watches[server]
    for line in lines:
        clock.advance(0.01)
        watch.handle(line, clock.now, clock.wall)


def tick(daemon: Daemon, clock: Clock) -> None:
    for watch in daemon.watches:
        daemon.dispatch(watch.core.tick(clock.now, clock.wall))


def sample(daemon: Daemon, name: str, **labels: str) -> float:
    value = daemon.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- item 5: the memory limits are the operator's, and an evicted prompt resolves -------------


def test_limit_flags_env_and_file_keys(tmp_path: Path) -> None:
    """`--max-pending-prompts` / `--max-sessions`, their variables and config keys."""
    assert load(RawOptions(), {}).limits == Limits()
    flags = RawOptions(max_pending_prompts="50", max_sessions="70")
    assert load(flags, {}).limits == Limits(sessions=70, prompts=50)
    env = {"OPENCODE_WATCHDOG_MAX_PENDING_PROMPTS": "5", "OPENCODE_WATCHDOG_MAX_SESSIONS": "6"}
    assert load(RawOptions(), env).limits == Limits(sessions=6, prompts=5)
    file = tmp_path / "watchdog.toml"
    file.write_text("max_pending_prompts = 3\nmax_sessions = 4\n")
    assert load(RawOptions(config=str(file)), {}).limits == Limits(sessions=4, prompts=3)
    for bad in ("0", "-1", "lots", "1.5", "99999999999"):
        with pytest.raises(ConfigError, match="--max-pending-prompts: expected a whole number"):
            load(RawOptions(max_pending_prompts=bad), {})


def test_cli_bad_limit_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--max-sessions", "none"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "opencode-watchdog: error: --max-sessions: expected a whole number from 1 to 10000000"
        " such as 1000, got 'none'"
    ]


async def test_prompt_pushed_out_by_the_limit_resolves_its_alert_and_keeps_the_counts() -> None:
    """`--max-pending-prompts 1`: a stalled prompt pushed out by a newer one resolves its
    no_response alert, ends `evicted`, and accepted = completed + pending still holds."""
    clock = Clock()
    options = RawOptions(
        servers=["oc=http://oc.test"],
        max_pending_prompts="1",
        first_response_timeout="10s",
    )
    daemon, seen = build(options, clock)
    feed(daemon, clock, prompt("ses_a", "msg_a", 1_800_000_000_000))
    clock.advance(11)
    tick(daemon, clock)
    assert seen.kinds() == ["stalled:no_response:msg_a"]
    feed(daemon, clock, prompt("ses_b", "msg_b", 1_800_000_011_000))
    assert seen.kinds() == [
        "stalled:no_response:msg_a",
        "resolved:no_response:msg_a",
        "completed:evicted:msg_a",
    ]
    resolved = [t for t in seen.seen if isinstance(t, Resolved)]
    assert [t.outcome for t in resolved] == [Outcome.EVICTED]
    accepted = sample(daemon, "opencode_watchdog_prompts_accepted_total", server="oc")
    completed = sum(
        sample(daemon, "opencode_watchdog_prompts_completed_total", server="oc", outcome=o.value)
        for o in Outcome
    )
    pending = daemon.watches[0].tracker.pending_count
    assert (accepted, completed, pending) == (2, 1, 1)


async def test_a_reload_that_lowers_the_limit_evicts_at_once_and_resolves() -> None:
    """A reload to `max_pending_prompts = 1` with two stalled prompts: the older one is evicted
    there and then, its alert resolved (not when the next prompt happens to arrive)."""
    clock = Clock()
    options = RawOptions(servers=["oc=http://oc.test"], first_response_timeout="10s")
    lowered = RawOptions(
        servers=["oc=http://oc.test"], first_response_timeout="10s", max_pending_prompts="1"
    )
    daemon, seen = build(options, clock, reload=lambda: load(lowered, {}))
    daemon._tg = _NoTasks()  # type: ignore[assignment]  # reload starts no task here
    feed(daemon, clock, prompt("ses_a", "msg_a", 1_800_000_000_000))
    feed(daemon, clock, prompt("ses_b", "msg_b", 1_800_000_001_000))
    clock.advance(11)
    tick(daemon, clock)
    assert sorted(seen.kinds()) == ["stalled:no_response:msg_a", "stalled:no_response:msg_b"]
    daemon.reload_config()
    assert seen.kinds()[2:] == ["resolved:no_response:msg_a", "completed:evicted:msg_a"]
    assert daemon.watches[0].tracker.pending_count == 1


class _NoTasks:
    """Stands in for the daemon's task group where a reload would start none that matter."""

    def start_soon(self, func: Any, *args: Any) -> None:
        close = getattr(func, "__self__", None)
        if isinstance(close, httpx.AsyncClient):
            return  # a replaced client's aclose: nothing was opened on it


# -- item 6: any failure of a reload keeps the running configuration --------------------------


def not_utf8(tmp_path: Path) -> Path:
    secret = tmp_path / "password"
    secret.write_bytes(b"\xffs3cret\xfe\n")
    secret.chmod(0o600)
    return secret


def test_a_password_file_that_is_not_utf8_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a UnicodeDecodeError traceback and exit 1."""
    secret = not_utf8(tmp_path)
    assert main(["run", "--password-file", str(secret)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"opencode-watchdog: error: --password-file: password file {secret} is not UTF-8 text"
        " (byte 0 cannot be read)"
    ]


def test_a_config_file_that_is_not_utf8_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "watchdog.toml"
    file.write_bytes(b'log_level = "\xff"\n')
    assert main(["run", "--config", str(file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"opencode-watchdog: error: --config: {file} is not UTF-8 text")


async def test_a_reload_with_a_password_file_that_is_not_utf8_keeps_the_old_config(
    tmp_path: Path,
) -> None:
    """SIGHUP with a bad secret once raised UnicodeDecodeError out of reload_config (which took
    the task group down): now it is logged at error level, counted, and nothing changes."""
    clock = Clock()
    good = tmp_path / "good"
    good.write_text("s3cret\n")
    good.chmod(0o600)
    options = RawOptions(servers=["oc=http://oc.test"], password_file=str(good))
    daemon, _ = build(options, clock)
    options.password_file = str(not_utf8(tmp_path))
    options.servers = ["other=http://other.test"]
    daemon._reload = lambda: load(options, {})
    daemon._tg = _NoTasks()  # type: ignore[assignment]
    before = daemon.config
    with capture_logs() as logs:
        daemon.reload_config()
    assert daemon.config is before
    assert [w.name for w in daemon.watches] == ["oc"]
    failed = [e for e in logs if e["event"] == "config.reload_failed"]
    assert [e["log_level"] for e in failed] == ["error"]
    assert "is not UTF-8 text" in failed[0]["error"]
    assert "s3cret" not in json.dumps(logs, default=str)
    assert sample(daemon, "opencode_watchdog_config_reload_failures_total") == 1


async def test_a_reload_that_raises_anything_keeps_the_old_config() -> None:
    """Not only ConfigError: whatever escapes loading is a failed reload, never a dead daemon."""
    clock = Clock()
    daemon, _ = build(RawOptions(servers=["oc=http://oc.test"]), clock)

    def broken() -> Any:
        raise RuntimeError("disk on fire")

    daemon._reload = broken
    daemon._tg = _NoTasks()  # type: ignore[assignment]
    with capture_logs() as logs:
        daemon.reload_config()
    assert [e["error"] for e in logs if e["event"] == "config.reload_failed"] == [
        "RuntimeError: disk on fire"
    ]
    assert sample(daemon, "opencode_watchdog_config_reload_failures_total") == 1


# -- items 1 and 8 at the watch: retried reads, and a second read after each connect ----------

CONNECTED = b'data: {"payload":{"type":"server.connected","properties":{}}}\n\n'


async def held_open() -> AsyncIterator[bytes]:
    yield CONNECTED
    await anyio.sleep_forever()


def hung_messages() -> list[Any]:
    path = FIXTURES / "1.18.33" / "rest" / "session-messages-hung.json"
    return list(json.loads(path.read_text(encoding="utf-8")))


async def test_a_prompt_whose_first_events_were_lost_is_found_by_the_second_read() -> None:
    """Item 8: OpenCode can lose a new subscription's first events (rule 15 of the reference).
    The server says nothing runs at the connect's read and has a busy session a moment later,
    whose events the stream never carried: the read `follow_up_delay` after the connect finds
    it. (Here the delay is 0: what is checked is that a second read happens, not when.)"""
    messages = hung_messages()
    sid = messages[0]["info"]["sessionID"]
    status_reads = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal status_reads
        path = request.url.path
        if path == "/global/event":
            return httpx.Response(200, headers=SSE, content=held_open())
        if path == "/session/status":
            status_reads += 1
            return httpx.Response(200, json={} if status_reads == 1 else {sid: {"type": "busy"}})
        if path == f"/session/{sid}/message":
            return httpx.Response(200, json=messages)
        return httpx.Response(200, json=[])

    daemon = Daemon(
        load(RawOptions(servers=["oc=http://oc.test"]), {}),
        transport=httpx.MockTransport(handler),
    )
    watch = daemon.watches[0]
    watch.follow_up_delay = 0.0
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await wait_for(lambda: watch.tracker.pending_count == 1, "the prompt found by REST")
        tg.cancel_scope.cancel()
    assert watch.reconciles == 2
    assert status_reads == 2
    assert watch.tracker.pending(0)[0].ref.message_id == messages[0]["info"]["id"]


async def test_a_failed_read_is_logged_once_counted_and_retried_until_it_reads() -> None:
    """Item 1: `/session/status` fails three times, then reads. Each failure is counted, the
    first is logged with its cause, the recovery once; the reads go on until one succeeds."""
    status_reads = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal status_reads
        path = request.url.path
        if path == "/global/event":
            return httpx.Response(200, headers=SSE, content=held_open())
        if path == "/session/status":
            status_reads += 1
            return httpx.Response(503 if status_reads <= 3 else 200, json={})
        return httpx.Response(200, json=[])

    daemon = Daemon(
        load(RawOptions(servers=["oc=http://oc.test"]), {}),
        transport=httpx.MockTransport(handler),
    )
    watch = daemon.watches[0]
    watch.follow_up_delay = None
    watch.retry_delay = 0.0
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await wait_for(
                lambda: any(e["event"] == "reconcile.read_recovered" for e in logs), "recovery"
            )
            tg.cancel_scope.cancel()
    failed = [e for e in logs if e["event"] == "reconcile.read_failed"]
    assert [(e["what"], e["log_level"]) for e in failed] == [("status", "warning")]
    assert "answered HTTP 503" in failed[0]["error"]
    assert status_reads == 4
    assert watch.reconciles == 4
    counted = sample(
        daemon, "opencode_watchdog_reconcile_failures_total", server="oc", what="status"
    )
    assert counted == 3


# -- items 3 and 4: firing alerts live in the daemon, across reloads and removed servers -------


class Receivers:
    """Alertmanager and webhook endpoints behind the mock transport; OpenCode streams held open."""

    def __init__(self) -> None:
        self.alertmanager: list[dict[str, Any]] = []  # every alert posted, in order
        self.webhook: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "am.test":
            self.alertmanager.extend(json.loads(request.content))
            return httpx.Response(200)
        if request.url.host == "hook.test":
            self.webhook.append(json.loads(request.content))
            return httpx.Response(204)
        if request.url.path == "/global/event":
            return httpx.Response(200, headers=SSE, content=held_open())
        return httpx.Response(200, json=[] if request.url.path != "/session/status" else {})

    def am(self, message: str, *, resolved: bool, wall: float) -> list[dict[str, Any]]:
        """Alerts posted for ``message``: resolutions end at ``wall`` or before, firing ones after."""
        stamp = iso(wall)
        assert stamp is not None
        return [
            a
            for a in self.alertmanager
            if a["labels"].get("message_id") == message and (a["endsAt"] <= stamp) == resolved
        ]

    def probe_am(self, server: str, *, resolved: bool, wall: float) -> list[dict[str, Any]]:
        stamp = iso(wall)
        assert stamp is not None
        return [
            a
            for a in self.alertmanager
            if a["labels"]["alertname"] == "OpenCodeProbeFailed"
            and a["labels"]["server"] == server
            and (a["endsAt"] <= stamp) == resolved
        ]


def live_daemon(
    receivers: Receivers, clock: Clock, options: RawOptions, fresh: RawOptions
) -> Daemon:
    daemon = Daemon(
        load(options, {}),
        clock=lambda: clock.wall,
        monotonic=lambda: clock.now,
        transport=httpx.MockTransport(receivers.handle),
        reload=lambda: load(fresh, {}),
    )
    for watch in daemon.watches:
        watch.follow_up_delay = None
    return daemon


async def connected(daemon: Daemon) -> None:
    """Every stream is up and its connect's REST read fed (it would end prompts fed before)."""
    await wait_for(lambda: all(w.reconciles >= 1 for w in daemon.watches), "the first reads")


async def test_a_reload_keeps_the_firing_alerts_and_a_later_abort_resolves_them() -> None:
    """Item 3: adding a webhook and reloading rebuilt the Alertmanager sink with nothing
    active: the stalled prompt's alert was never re-sent (Alertmanager let it lapse at its
    endsAt while the prompt was still stalled) and an abort afterwards resolved nothing. Now
    the firing alerts are the daemon's: the rebuilt sink sends them at once and re-sends them,
    the new webhook hears of them, and the abort resolves the alert in both."""
    clock = Clock()
    receivers = Receivers()
    before = RawOptions(
        servers=["oc=http://oc.test"],
        alertmanagers=["http://am.test:9093"],
        first_response_timeout="10s",
    )
    after = RawOptions(
        servers=["oc=http://oc.test"],
        alertmanagers=["http://am.test:9093"],
        first_response_timeout="10s",
        webhooks=["http://hook.test/alerts"],
    )
    daemon = live_daemon(receivers, clock, before, after)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await connected(daemon)
        feed(daemon, clock, prompt("ses_a", "msg_a", 1_800_000_000_000))
        clock.advance(11)
        tick(daemon, clock)
        await wait_for(
            lambda: len(receivers.am("msg_a", resolved=False, wall=clock.wall)) == 1, "fired"
        )
        daemon.reload_config()
        await wait_for(
            lambda: len(receivers.am("msg_a", resolved=False, wall=clock.wall)) == 2,
            "the rebuilt Alertmanager sink sending what fires",
        )
        await wait_for(lambda: len(receivers.webhook) == 1, "the new webhook told")
        assert daemon.alerting.alertmanager is not None
        daemon.alerting.alertmanager.resend()  # the resend loop's work, without its minute
        await wait_for(
            lambda: len(receivers.am("msg_a", resolved=False, wall=clock.wall)) == 3, "re-sent"
        )
        clock.advance(5)
        feed(daemon, clock, [event("session.deleted", {"info": {"id": "ses_a"}})])
        await wait_for(
            lambda: len(receivers.am("msg_a", resolved=True, wall=clock.wall)) == 1, "resolved"
        )
        await wait_for(lambda: len(receivers.webhook) == 2, "resolved on the new webhook")
        tg.cancel_scope.cancel()
    assert [(w["status"], w["kind"], w["message_id"]) for w in receivers.webhook] == [
        ("firing", "no_response", "msg_a"),
        ("resolved", "no_response", "msg_a"),
    ]
    assert receivers.webhook[1]["outcome"] == "aborted"
    assert len(daemon.firing) == 0


async def test_a_removed_server_resolves_its_prompt_and_probe_alerts() -> None:
    """Item 4: server B removed by a reload while its prompt's stall and its probe alert fire:
    both resolve (the probe's never did), and a probe of B still in flight fires nothing."""
    clock = Clock()
    receivers = Receivers()
    both = RawOptions(
        servers=["a=http://a.test", "b=http://b.test"],
        alertmanagers=["http://am.test:9093"],
        webhooks=["http://hook.test/alerts"],
        first_response_timeout="10s",
        probe_interval="1h",
    )
    only_a = RawOptions(
        servers=["a=http://a.test"],
        alertmanagers=["http://am.test:9093"],
        webhooks=["http://hook.test/alerts"],
        first_response_timeout="10s",
        probe_interval="1h",
    )
    daemon = live_daemon(receivers, clock, both, only_a)
    assert daemon.prober is not None
    prober = daemon.prober
    failed = ProbeResult(
        server="b",
        shape=ProbeShape.CURRENT,
        ok=False,
        started_at=clock.wall,
        steps=(StepTiming(Step.STORED, 10.0, False),),
        failed_step=Step.STORED,
        reason="no user message stored within 10s of the 204",
    )
    async with anyio.create_task_group() as tg:
        daemon.prober = None  # no probe loop: the test records the results itself
        await tg.start(daemon.run)
        daemon.prober = prober
        await connected(daemon)
        feed(daemon, clock, prompt("ses_b", "msg_b", 1_800_000_000_000), server=1)
        clock.advance(11)
        tick(daemon, clock)
        prober.record(failed)
        await wait_for(
            lambda: (
                len(receivers.am("msg_b", resolved=False, wall=clock.wall)) == 1
                and len(receivers.probe_am("b", resolved=False, wall=clock.wall)) == 1
            ),
            "both fired",
        )
        clock.advance(1)
        daemon.reload_config()
        prober.record(failed)  # in flight when b was removed
        await wait_for(
            lambda: (
                len(receivers.am("msg_b", resolved=True, wall=clock.wall)) == 1
                and len(receivers.probe_am("b", resolved=True, wall=clock.wall)) == 1
            ),
            "both resolved",
        )
        await wait_for(lambda: len(receivers.webhook) == 4, "four webhook documents")
        tg.cancel_scope.cancel()
    assert sorted((w["status"], w["kind"]) for w in receivers.webhook) == [
        ("firing", "no_response"),
        ("firing", "probe_failed"),
        ("resolved", "no_response"),
        ("resolved", "probe_failed"),
    ]
    assert len(receivers.probe_am("b", resolved=False, wall=clock.wall)) == 1  # fired once
    assert len(daemon.firing) == 0
    assert prober.describe("b") == []


async def test_a_stop_resolves_nothing() -> None:
    """A daemon that stops (SIGTERM, cancellation) resolves none of its firing alerts: the
    prompt is still stalled; Alertmanager lets the alert end at its endsAt."""
    clock = Clock()
    receivers = Receivers()
    options = RawOptions(
        servers=["oc=http://oc.test"],
        alertmanagers=["http://am.test:9093"],
        webhooks=["http://hook.test/alerts"],
        first_response_timeout="10s",
    )
    daemon = live_daemon(receivers, clock, options, options)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await connected(daemon)
        feed(daemon, clock, prompt("ses_a", "msg_a", 1_800_000_000_000))
        clock.advance(11)
        tick(daemon, clock)
        await wait_for(
            lambda: bool(
                receivers.am("msg_a", resolved=False, wall=clock.wall) and receivers.webhook
            ),
            "fired",
        )
        tg.cancel_scope.cancel()
    assert receivers.am("msg_a", resolved=True, wall=clock.wall) == []
    assert [w["status"] for w in receivers.webhook] == ["firing"]
    assert len(daemon.firing) == 1
