"""Smoke tests proving the e2e harness drives a real opencode server the way the daemon sees it."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import httpx
import pytest

from .conftest import DaemonFactory
from .fakellm import NORMAL_REPLY, TITLE_PREFIX, FakeLLM
from .harness import PATIENCE, OpenCodeServer, WebhookReceiver, opencode_id, wait_until


def _text_parts(message: dict[str, Any]) -> list[str]:
    return [str(p.get("text", "")) for p in message["parts"] if p.get("type") == "text"]


def test_normal_prompt_gets_a_stop_reply(
    opencode_server: OpenCodeServer, fake_llm: FakeLLM
) -> None:
    """A plain prompt is answered: its assistant reply completes with finish == "stop"."""
    sid = opencode_server.create_session()
    mid = opencode_server.send_prompt(sid, "hello")

    reply = opencode_server.wait_for_reply(sid, mid, timeout=PATIENCE)

    assert reply["finish"] == "stop"
    answered = [m for m in opencode_server.messages(sid) if m["info"]["id"] == reply["id"]]
    assert _text_parts(answered[0]) == [NORMAL_REPLY]
    assert fake_llm.request_count("normal") == 1


def test_hang_leaves_session_busy_with_incomplete_reply(
    opencode_server: OpenCodeServer, fake_llm: FakeLLM
) -> None:
    """While the LLM sends nothing, the session stays busy and its reply has no time.completed."""
    sid = opencode_server.create_session()
    mid = opencode_server.send_prompt(sid, "please HANG")
    fake_llm.wait_for_request(lambda r: r.mode == "hang", timeout=PATIENCE)

    status = opencode_server.wait_for_status(sid, "busy")
    replies = opencode_server.wait_until(
        lambda: opencode_server.assistant_replies(sid, mid), 10, "the placeholder reply"
    )

    assert status == {"type": "busy"}
    assert [r.get("time", {}).get("completed") for r in replies] == [None]
    assert opencode_server.session_status().get(sid) == {"type": "busy"}


def test_global_event_stream_starts_with_server_connected(
    opencode_server: OpenCodeServer,
) -> None:
    """The first event on /global/event is server.connected, wrapped in a payload."""
    events = opencode_server.read_events("/global/event", count=1)

    assert len(events) == 1, events
    assert events[0]["payload"]["type"] == "server.connected"


def test_failing_llm_puts_session_in_retry(
    opencode_server: OpenCodeServer, fake_llm: FakeLLM
) -> None:
    """HTTP 500 from the LLM shows up only as session.status retry with the provider message."""
    sid = opencode_server.create_session()
    opencode_server.send_prompt(sid, "please FAIL")

    status = opencode_server.wait_for_status(sid, "retry", timeout=PATIENCE)

    assert status["message"] == "upstream exploded"
    assert status["attempt"] >= 1
    assert fake_llm.request_count("fail") >= 1


def test_repeated_message_id_after_reply_does_not_reach_llm(
    opencode_server: OpenCodeServer, fake_llm: FakeLLM
) -> None:
    """Re-sending an answered messageID is accepted (204) but triggers no LLM request or reply."""
    sid = opencode_server.create_session()
    mid = opencode_server.send_prompt(sid, "hello")
    opencode_server.wait_for_reply(sid, mid, timeout=PATIENCE)
    opencode_server.wait_for_status(sid, "idle")
    before = fake_llm.request_count()

    assert opencode_server.prompt_async(sid, "hello again", message_id=mid) == 204

    def second_part_stored_and_idle() -> bool:
        user = [m for m in opencode_server.messages(sid) if m["info"]["id"] == mid]
        stored = len(_text_parts(user[0])) == 2
        return stored and sid not in opencode_server.session_status()

    opencode_server.wait_until(
        second_part_stored_and_idle, PATIENCE, "the repeated prompt to settle"
    )
    assert fake_llm.request_count() == before
    assert len(opencode_server.assistant_replies(sid, mid)) == 1


def test_tool_prompt_waits_for_permission_then_answers(
    opencode_server: OpenCodeServer, fake_llm: FakeLLM
) -> None:
    """A TOOL prompt parks on a bash permission request; replying "once" lets it finish."""
    sid = opencode_server.create_session()
    mid = opencode_server.send_prompt(sid, "run a TOOL please")

    request = opencode_server.wait_for_permission(sid, timeout=PATIENCE)
    assert request["permission"] == "bash"
    assert opencode_server.session_status().get(sid) == {"type": "busy"}
    assert opencode_server.reply_permission(request["id"], "once") is True

    reply = opencode_server.wait_for_reply(sid, mid, timeout=PATIENCE)
    assert reply["finish"] == "stop"
    finishes = [r.get("finish") for r in opencode_server.assistant_replies(sid, mid)]
    assert finishes == ["tool-calls", "stop"]
    assert fake_llm.request_count("tool") == 1


@pytest.mark.own_server
def test_restart_keeps_port_and_leaves_interrupted_reply_incomplete(
    opencode_server: OpenCodeServer, fake_llm: FakeLLM
) -> None:
    """After SIGKILL and restart on the same port, status is empty and the reply never completes."""
    sid = opencode_server.create_session()
    mid = opencode_server.send_prompt(sid, "please HANG")
    fake_llm.wait_for_request(lambda r: r.mode == "hang", timeout=PATIENCE)
    old_pid, port = opencode_server.pid, opencode_server.port

    assert opencode_server.kill9() == -signal.SIGKILL
    opencode_server.restart()

    assert (opencode_server.port, opencode_server.pid != old_pid) == (port, True)
    assert opencode_server.session_status() == {}
    replies = opencode_server.assistant_replies(sid, mid)
    assert [r.get("time", {}).get("completed") for r in replies] == [None]


def test_generated_ids_have_opencode_shape_and_ascend() -> None:
    """Client-made ids are prefix_ + 12 hex digits + 14 base62 chars and sort by creation."""
    ids = [opencode_id("msg") for _ in range(50)]

    assert all(len(i) == 4 + 12 + 14 and i.startswith("msg_") for i in ids)
    assert [i[4:16] for i in ids] == sorted(i[4:16] for i in ids)
    assert len({i[4:16] for i in ids}) == len(ids)


# Stands in for the daemon to exercise DaemonProcess/WebhookReceiver without the real CLI:
# JSON logs on stdout, a Prometheus endpoint on --listen, one webhook POST retried until 2xx.
_STAND_IN = r"""
import json, signal, sys, threading, time, urllib.request, urllib.error
from prometheus_client import Counter, start_http_server
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
host, port = args["--listen"].rsplit(":", 1)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
hits = Counter("standin_alerts", "alerts", ["server"])
start_http_server(int(port), addr=host)
print(json.dumps({"event": "started", "listen": args["--listen"]}), flush=True)
print("not json", flush=True)
hits.labels(server="a").inc(2)
for attempt in range(1, 6):
    req = urllib.request.Request(args["--webhook"], data=json.dumps({"attempt": attempt}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)
        print(json.dumps({"event": "webhook_sent", "attempt": attempt}), flush=True)
        break
    except urllib.error.HTTPError:
        time.sleep(0.1)
done.wait(60)
print(json.dumps({"event": "stopping"}), flush=True)
"""


def test_daemon_process_reads_logs_metrics_and_webhook_retries(
    daemon_factory: DaemonFactory, webhook: WebhookReceiver
) -> None:
    """DaemonProcess parses JSON log lines and metrics; the webhook can fail the first requests."""
    webhook.fail_next(2)
    daemon = daemon_factory(["--webhook", webhook.url], command=[sys.executable, "-c", _STAND_IN])

    sent = daemon.wait_for_log(lambda r: r.get("event") == "webhook_sent", timeout=20)
    body = webhook.wait_for(lambda b: b.get("attempt") == 3, timeout=5)

    assert sent["attempt"] == 3
    assert body == {"attempt": 3}
    assert [r.status for r in webhook.requests] == [500, 500, 200]
    assert daemon.sample("standin_alerts", {"server": "a"}) == 2.0
    assert daemon.sample("standin_alerts_total", {"server": "a"}) == 2.0
    assert daemon.sample("standin_alerts", {"server": "b"}) is None
    assert daemon.wait_for_sample("standin_alerts", {}, lambda v: v == 2.0, timeout=5) == 2.0
    assert "not json" in daemon.stdout_lines
    assert daemon.stop() == 0
    assert [r["event"] for r in daemon.logs()][-1] == "stopping"
    assert daemon.logs("started")[0]["listen"] == daemon.listen


def _chat(llm: FakeLLM, messages: list[dict[str, Any]]) -> httpx.Response:
    body = {"model": "fake-1", "stream": True, "messages": messages}
    return httpx.post(f"{llm.base_url}/chat/completions", json=body, timeout=10, trust_env=False)


def _stream_deltas(response: httpx.Response) -> tuple[str, list[str | None], list[Any]]:
    """(concatenated content, finish reasons, tool-call deltas) of an SSE chat response."""
    lines = [ln[6:] for ln in response.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(ln) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    choices = [c["choices"][0] for c in chunks]
    text = "".join(ch["delta"].get("content") or "" for ch in choices)
    tools = [tc for ch in choices for tc in ch["delta"].get("tool_calls", [])]
    return text, [ch["finish_reason"] for ch in choices], tools


def test_fake_llm_modes_follow_the_last_user_message() -> None:
    """The fake answers per keyword: text, SLOWn tokens, FAIL 500, TOOL call, titles, models."""
    with FakeLLM(slow_interval=0.01) as llm:
        text, finishes, _ = _stream_deltas(_chat(llm, [{"role": "user", "content": "hi"}]))
        assert (text, finishes[-1], finishes.count(None)) == (NORMAL_REPLY, "stop", 6)

        text, _, _ = _stream_deltas(_chat(llm, [{"role": "user", "content": "go SLOW3"}]))
        assert text == "tick1 tick2 tick3 "

        failed = _chat(llm, [{"role": "user", "content": "please FAIL"}])
        assert failed.status_code == 500
        assert failed.json() == {"error": {"message": "upstream exploded"}}

        _, finishes, tools = _stream_deltas(_chat(llm, [{"role": "user", "content": "TOOL"}]))
        arguments = "".join(t["function"]["arguments"] for t in tools)
        assert (tools[0]["function"]["name"], finishes[-1]) == ("bash", "tool_calls")
        assert json.loads(arguments) == {"command": "echo hi", "description": "say hi"}

        after_tool = [
            {"role": "user", "content": "TOOL"},
            {"role": "tool", "tool_call_id": "call_1", "content": "hi"},
        ]
        assert _stream_deltas(_chat(llm, after_tool))[0] == NORMAL_REPLY

        title = [
            {"role": "system", "content": TITLE_PREFIX + ". Output only a title."},
            {"role": "user", "content": "please HANG"},
        ]
        assert _stream_deltas(_chat(llm, title))[0] == "Fake title"

        models = httpx.get(f"{llm.base_url}/models", timeout=5, trust_env=False).json()
        assert [m["id"] for m in models["data"]] == ["fake-1"]
        assert [r.mode for r in llm.chat_requests()] == ["normal", "slow", "fail", "tool", "normal"]
        assert llm.request_count("slow") == 1


def test_fake_llm_hangs_end_when_the_fake_stops() -> None:
    """HANG sends no status line and HANGMID stops after 3 tokens; stop() releases both at once."""
    llm = FakeLLM().start()
    received: dict[str, list[str]] = {"HANG": [], "HANGMID": []}
    errors: dict[str, str] = {}

    def call(word: str) -> None:
        try:
            with httpx.stream(
                "POST",
                f"{llm.base_url}/chat/completions",
                json={"stream": True, "messages": [{"role": "user", "content": word}]},
                timeout=PATIENCE,
                trust_env=False,
            ) as response:
                for piece in response.iter_text():
                    received[word].append(piece)
        except httpx.HTTPError as exc:
            errors[word] = type(exc).__name__

    def chunks(word: str) -> int:
        return "".join(received[word]).count("chat.completion.chunk")

    threads = [threading.Thread(target=call, args=(w,), daemon=True) for w in received]
    for t in threads:
        t.start()
    llm.wait_for_request(lambda r: r.mode == "hang", timeout=5)
    wait_until(lambda: chunks("HANGMID") == 4, PATIENCE, "the role chunk and 3 HANGMID tokens")
    llm.stop()
    for t in threads:
        t.join(timeout=10)

    assert [t.is_alive() for t in threads] == [False, False]
    assert errors.get("HANG") == "RemoteProtocolError"
    assert received["HANG"] == []
    assert chunks("HANGMID") == 4
    assert "[DONE]" not in "".join(received["HANGMID"])
