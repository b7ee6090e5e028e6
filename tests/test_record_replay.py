"""`run --record` writes what the daemon received; `replay` reads it back on a virtual clock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import FIXTURES, VERSIONS, capture, wait_for
from watchdog.app.config import Config, RawOptions, load
from watchdog.app.daemon import Daemon
from watchdog.app.replay import analyse, read_file, read_recording, replay, replay_files
from watchdog.core.server import ServerCore
from watchdog.core.settings import ServerConfig, Timeouts
from watchdog.core.transitions import Stalled, Transition
from watchdog.io.record import Recorder
from watchdog.opencode.strip import strip_text
from watchdog.opencode.v1 import PROBE_TITLE, V1Stream, decode_line

NORMAL = FIXTURES / "1.18.33" / "normal.global-event.sse"
HANG_MID = FIXTURES / "1.18.33" / "hang-mid.global-event.sse"
REPLY_TEXT = "Hello from the fake model."
PROMPT_TEXT = '"text":"hello"'


def data_lines(path: Path) -> list[str]:
    return [
        line[5:].strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("data:")
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_stripping_text_changes_no_decoded_event(version: str) -> None:
    """Every event of every reference capture decodes to the same event with its text stripped."""
    checked = 0
    for path in sorted((FIXTURES / version).glob("*.sse")):
        scoped = path.name.endswith(".event.sse")
        for data in data_lines(path):
            stripped = json.dumps(strip_text(json.loads(data)))
            assert decode_line(stripped, directory_scoped=scoped) == decode_line(
                data, directory_scoped=scoped
            ), (path.name, data[:120])
            checked += 1
    assert checked > 500


def test_stripping_removes_prompt_reply_and_title_text() -> None:
    """The prompt, the streamed reply, its final text and the session title are gone."""
    raw = "\n".join(data_lines(NORMAL))
    assert REPLY_TEXT in raw
    assert PROMPT_TEXT in raw
    assert "Fake title" in raw
    stripped = "\n".join(
        json.dumps(strip_text(json.loads(d)), separators=(",", ":")) for d in data_lines(NORMAL)
    )
    for text in (REPLY_TEXT, PROMPT_TEXT, "Fake title", '"delta":"Hello '):
        assert text not in stripped


def sse_server(path: Path) -> httpx.MockTransport:
    body = [(f"data: {d}\n\n").encode() for d in data_lines(path)]

    async def hold() -> AsyncIterator[bytes]:
        for chunk in body:
            yield chunk
        await anyio.sleep_forever()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/global/event":
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=hold()
            )
        return httpx.Response(200, json={} if request.url.path == "/session/status" else [])

    return httpx.MockTransport(handler)


async def record_run(path: Path, *, text: bool) -> Daemon:
    config = Config(
        servers=(ServerConfig("laptop", "http://oc.test"),),
        listen_port=0,
        record=str(path),
        record_text=text,
    )
    daemon = Daemon(config, transport=sse_server(NORMAL))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        expected = len(data_lines(NORMAL))
        await wait_for(
            lambda: path.exists() and len(path.read_text().splitlines()) >= expected,
            "every event in the recording",
        )
        tg.cancel_scope.cancel()
    return daemon


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_daemon_records_every_received_event_without_text(tmp_path: Path) -> None:
    """`run --record`: one JSON line per received event (sync duplicates too) with its receive
    time, server and stream path; the text is stripped; replaying it gives what the daemon saw."""
    path = tmp_path / "rec.jsonl"
    daemon = await record_run(path, text=False)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(data_lines(NORMAL))
    assert {(r["server"], r["stream"]) for r in lines} == {("laptop", "/global/event")}
    times = [r["at"] for r in lines]
    assert times == sorted(times)
    assert daemon.watches[0].status.last_event_at == pytest.approx(times[-1], abs=1e-5)
    raw = path.read_text()
    assert REPLY_TEXT not in raw
    assert PROMPT_TEXT not in raw
    events = [r.event for r in read_recording(raw.splitlines())]
    assert events == [r.event for r in capture("1.18.33", "normal", stream="global-event")]
    report = analyse(list(read_recording(raw.splitlines())), Timeouts())
    assert report.outcomes == {"answered": 1}


@pytest.mark.anyio
async def test_record_text_keeps_the_text(tmp_path: Path) -> None:
    """With `--record-text` the events are recorded exactly as received."""
    path = tmp_path / "rec.jsonl"
    await record_run(path, text=True)
    recorded = [r["data"] for r in map(json.loads, path.read_text().splitlines())]
    assert recorded == [json.loads(d) for d in data_lines(NORMAL)]


def test_recording_rotates_by_size_and_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    """Past max_bytes the file becomes FILE.1 (FILE.1 becomes FILE.2...); older ones are removed,
    no file grows past the limit, and the newest events are in FILE."""
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(path, max_bytes=4000, keep=2)
    data = data_lines(NORMAL)
    for n, d in enumerate(data):
        recorder.write("laptop", "/global/event", d, 1000.0 + n)
    recorder.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rec.jsonl", "rec.jsonl.1", "rec.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 4000 for f in files)
    newest = [json.loads(line)["at"] for line in path.read_text().splitlines()]
    assert newest[-1] == 1000.0 + len(data) - 1
    older = [json.loads(line)["at"] for line in (tmp_path / "rec.jsonl.1").read_text().splitlines()]
    assert older[-1] == newest[0] - 1


def test_record_options_come_from_flags_environment_and_file(tmp_path: Path) -> None:
    """`--record`/`--record-text` have variables and config keys like every option; a bad
    boolean names its source."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('record = "/var/lib/w/rec.jsonl"\nrecord_text = true\n')
    config = load(RawOptions(config=str(cfg)), {})
    assert (config.record, config.record_text) == ("/var/lib/w/rec.jsonl", True)
    config = load(RawOptions(record="x.jsonl"), {"OPENCODE_WATCHDOG_RECORD_TEXT": "no"})
    assert (config.record, config.record_text) == ("x.jsonl", False)
    with pytest.raises(ValueError, match=r"^OPENCODE_WATCHDOG_RECORD_TEXT: expected true or false"):
        load(RawOptions(), {"OPENCODE_WATCHDOG_RECORD_TEXT": "maybe"})


def watchdog_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_record_to_an_unwritable_place_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A `--record` file that cannot be opened stops the start with one line naming the option."""
    target = tmp_path / "missing-dir" / "rec.jsonl"
    done = watchdog_cli("run", "--record", str(target), "--listen", "127.0.0.1:0")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"opencode-watchdog: error: --record: cannot write {target}: No such file or directory"
    ]


HANG_MID_AND_NORMAL = """\
replayed 49 events from 1 server(s) over 30.1 s: 2 prompt(s)
timeouts: first response 1 s, inactivity 1 s, tool 1800 s

stalls: inactive 1
outcomes: answered 1, still pending 1

seconds          count      p50      p90      p99      max
first response       2     0.11     0.17     0.17     0.17
reply duration       1     0.32     0.32     0.32     0.32

sweep: each value as the first-response and inactivity timeout
(false alarms: prompts alerted on that were answered later)
  timeout  alerts  no_response     inactive  false alarms
    0.1 s       3            2            1             1
    0.5 s       1            0            1             0
      5 s       1            0            1             0"""


def test_replay_of_reference_captures_prints_the_expected_table() -> None:
    """`replay` over two real captures: a normal reply (first output after 0.11 s, done after
    0.32 s) and a reply that goes quiet (first output after 0.17 s). At 0.1 s both prompts get a
    no_response alert and the normal one is answered later: a false alarm."""
    done = watchdog_cli(
        "replay",
        str(NORMAL),
        str(HANG_MID),
        "--first-response-timeout",
        "1s",
        "--inactivity-timeout",
        "1",
        "--sweep",
        "0.1s,0.5s",
        "--sweep",
        "5s",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == HANG_MID_AND_NORMAL + "\n"


def test_replay_json_has_the_same_numbers() -> None:
    """`--json` is the same report for machines."""
    out = json.loads(replay_files([str(NORMAL)], Timeouts(), [0.1], as_json=True))
    assert out["events"] == 30
    assert out["prompts"] == 1
    assert out["alerts"] == 0
    assert out["outcomes"] == {"answered": 1}
    assert out["first_response_seconds"] == {
        "count": 1,
        "p50": 0.111,
        "p90": 0.111,
        "p99": 0.111,
        "max": 0.111,
    }
    assert out["sweep"][0]["stalls"] == {"no_response": 1}
    assert out["sweep"][0]["false_alarms"] == 1


def test_replay_reads_a_directory_stream_capture_too() -> None:
    """A `/event` capture (payloads not wrapped) is told apart from a `/global/event` one."""
    path = FIXTURES / "1.15.13" / "normal.event.sse"
    recording = read_file(path.read_text(encoding="utf-8").splitlines())
    assert analyse(recording, Timeouts()).outcomes == {"answered": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "0"], "--sweep: expected a positive duration"),
        (["--first-response-timeout", "soon"], "--first-response-timeout: expected a positive"),
    ],
)
def test_replay_bad_values_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = watchdog_cli("replay", str(NORMAL), *args)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr


def test_readme_shows_the_table_replay_prints() -> None:
    """The replay table in the README is this test's expected output, not a hand-edited copy."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert HANG_MID_AND_NORMAL in readme


@pytest.mark.parametrize("data", ["[" * 100_000 + "]" * 100_000, '{"at": NaN}'])
def test_a_hostile_event_is_recorded_as_unreadable_never_raised(tmp_path: Path, data: str) -> None:
    """Nesting that breaks json's recursion, or NaN, is peer data: kept as raw (or null), no error."""
    recorder = Recorder(tmp_path / "events.jsonl")
    recorder.write("oc", "/global/event", data, 1.0)
    recorder.write("oc", "/global/event", '{"payload": {"type": "server.heartbeat"}}', 2.0)
    recorder.close()
    first, second = (
        json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()
    )
    assert first["raw"] is None
    assert "data" not in first
    assert second["data"] == {"payload": {"type": "server.heartbeat"}}


def _line(payload: dict[str, object]) -> str:
    return json.dumps({"directory": "/w", "project": "global", "payload": payload})


def _story() -> list[str]:
    """A probe session (the admission probe's own, by its title) and a real one, both with a
    prompt that hangs; the server's clock runs 2 s behind ours."""
    now_ms = int(time.time() * 1000) - 2000
    events: list[str] = [json.dumps({"payload": {"type": "server.connected", "properties": {}}})]
    for session, title, message in (
        ("ses_probe", PROBE_TITLE, "msg_probe"),
        ("ses_real", "a title", "msg_real"),
    ):
        info = {"id": session, "title": title, "directory": "/w", "time": {"created": now_ms}}
        user = {"id": message, "sessionID": session, "role": "user", "time": {"created": now_ms}}
        events += [
            _line({"type": "session.created", "properties": {"sessionID": session, "info": info}}),
            _line({"type": "message.updated", "properties": {"sessionID": session, "info": user}}),
            _line(
                {
                    "type": "session.status",
                    "properties": {"sessionID": session, "status": {"type": "busy"}},
                }
            ),
        ]
    return events


def _story_server(events: list[str]) -> httpx.MockTransport:
    async def hold() -> AsyncIterator[bytes]:
        for data in events:
            yield f"data: {data}\n\n".encode()
        await anyio.sleep_forever()

    busy = {"type": "busy"}
    users = [json.loads(e)["payload"]["properties"] for e in events if '"role": "user"' in e]
    messages = {
        f"/session/{u['sessionID']}/message": [{"info": u["info"], "parts": []}] for u in users
    }

    def handler(request: httpx.Request) -> httpx.Response:
        # Its REST agrees with its stream: both sessions run.
        if request.url.path == "/global/event":
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=hold()
            )
        if request.url.path == "/session/status":
            return httpx.Response(200, json={"ses_probe": busy, "ses_real": busy})
        return httpx.Response(200, json=messages.get(request.url.path, []))

    return httpx.MockTransport(handler)


def _what(transitions: list[Transition]) -> list[tuple[str, str | None, str]]:
    return [
        (
            type(t).__name__,
            t.prompt.message_id,
            str(getattr(t, "kind", "") or getattr(t, "outcome", "")),
        )
        for t in transitions
    ]


@pytest.mark.anyio
async def test_a_recording_replays_to_what_the_live_daemon_reported(tmp_path: Path) -> None:
    """The live daemon and `replay` of its recording run the same per-server core: the probe's
    session stays out of both, the prompt is timed from the same clock samples, and the same
    stall comes out of both for the same prompt."""
    path = tmp_path / "rec.jsonl"
    timeouts = Timeouts(first_response=0.3, inactivity=0.3, tool=10.0)
    config = Config(
        servers=(ServerConfig("laptop", "http://oc.test"),),
        listen_port=0,
        record=str(path),
        timeouts=timeouts,
    )
    daemon = Daemon(config, transport=_story_server(_story()))
    live: list[Transition] = []
    dispatch = daemon.dispatch

    def keep(transitions: list[Transition]) -> None:
        live.extend(transitions)
        dispatch(transitions)

    daemon.dispatch = keep  # type: ignore[method-assign]  # the watches call it through self
    for watch in daemon.watches:
        watch._dispatch = keep
    daemon.timers._dispatch = keep
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await wait_for(lambda: any(isinstance(t, Stalled) for t in live), "the live stall")
        tg.cancel_scope.cancel()
    recording = list(read_recording(path.read_text().splitlines()))
    core = ServerCore("laptop", V1Stream(directory_scoped=False), timeouts)
    replayed = [t for _, t in replay(core, recording, until=recording[-1].now + 1.0)]
    assert (
        _what(live)
        == _what(replayed)
        == [
            ("Accepted", "msg_real", ""),
            ("Stalled", "msg_real", "no_response"),
        ]
    )
    assert live[0].prompt.accepted_at == pytest.approx(replayed[0].prompt.accepted_at, abs=1e-3)
