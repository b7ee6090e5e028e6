"""Records byte-exact event streams of a real `opencode serve` for the reference rules 9-13.

Run: ``.venv/bin/python -m tests.e2e.capture --out tests/fixtures/opencode/1.18.33``. It starts the
pinned server and the fake LLM on loopback, records ``/event`` and ``/global/event`` while each
scenario runs in a fresh session, and writes ``<scenario>.{event,global-event}.sse`` plus
``<scenario>.timeline.json`` (what the client did, when, and what HTTP said).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .fakellm import FakeLLM
from .harness import OpenCodeServer, opencode_id


class _Recorder:
    """Copies the raw bytes of one SSE endpoint to a file until stopped."""

    def __init__(self, server: OpenCodeServer, path: str, out: Path) -> None:
        self._client = httpx.Client(
            base_url=server.url, auth=("opencode", server.password), trust_env=False
        )
        self._thread = threading.Thread(target=self._run, args=(path, out), daemon=True)

    def _run(self, path: str, out: Path) -> None:
        # Heartbeats come every 10 s, so a 30 s read timeout never fires on a live server;
        # stop() ends the read by closing the client under it.
        try:
            with (
                out.open("wb") as sink,
                self._client.stream("GET", path, timeout=httpx.Timeout(30.0)) as response,
            ):
                for chunk in response.iter_raw():
                    sink.write(chunk)
                    sink.flush()
        except (httpx.HTTPError, RuntimeError):
            return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._client.close()
        self._thread.join(timeout=5.0)


class _Timeline:
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def add(self, what: str, **details: Any) -> None:
        self.steps.append({"at_ms": int(time.time() * 1000), "what": what, **details})


Scenario = Callable[[OpenCodeServer, str, _Timeline], None]


def _post(server: OpenCodeServer, path: str, body: Any, timeline: _Timeline, what: str) -> None:
    response = server.client.post(path, json=body)
    timeline.add(what, path=path, status=response.status_code)


def unknown_agent(server: OpenCodeServer, sid: str, timeline: _Timeline) -> None:
    body = {"agent": "no-such-agent", "parts": [{"type": "text", "text": "hi"}]}
    _post(server, f"/session/{sid}/prompt_async", body, timeline, "prompt_async unknown agent")
    time.sleep(3.0)
    mid = server.send_prompt(sid, "hello after the failure")
    timeline.add("prompt_async normal", message_id=mid)
    server.wait_for_reply(sid, mid)
    time.sleep(1.0)


def unknown_model(server: OpenCodeServer, sid: str, timeline: _Timeline) -> None:
    mid = opencode_id("msg")
    body = {
        "messageID": mid,
        "model": {"providerID": "fake", "modelID": "no-such-model"},
        "parts": [{"type": "text", "text": "hi", "id": opencode_id("prt")}],
    }
    _post(server, f"/session/{sid}/prompt_async", body, timeline, "prompt_async unknown model")
    timeline.steps[-1]["message_id"] = mid
    time.sleep(3.0)


def provider_400(server: OpenCodeServer, sid: str, timeline: _Timeline) -> None:
    mid = server.send_prompt(sid, "BADREQUEST please")
    timeline.add("prompt_async BADREQUEST (fake LLM answers 400)", message_id=mid)
    time.sleep(4.0)


def no_reply(server: OpenCodeServer, sid: str, timeline: _Timeline) -> None:
    mid = opencode_id("msg")
    body = {
        "messageID": mid,
        "noReply": True,
        "parts": [{"type": "text", "text": "context only", "id": opencode_id("prt")}],
    }
    _post(server, f"/session/{sid}/prompt_async", body, timeline, "prompt_async noReply")
    timeline.steps[-1]["message_id"] = mid
    time.sleep(3.0)
    second = server.send_prompt(sid, "hello after the context")
    timeline.add("prompt_async normal", message_id=second)
    server.wait_for_reply(sid, second)
    time.sleep(1.0)


def shell(server: OpenCodeServer, sid: str, timeline: _Timeline) -> None:
    body = {"agent": "build", "command": "echo hi"}
    response = server.client.post(f"/session/{sid}/shell", json=body, timeout=30.0)
    timeline.add("shell echo hi", status=response.status_code)
    time.sleep(2.0)


def delete(server: OpenCodeServer, sid: str, timeline: _Timeline) -> None:
    mid = server.send_prompt(sid, "HANG")
    timeline.add("prompt_async HANG", message_id=mid)
    time.sleep(3.0)
    response = server.client.delete(f"/session/{sid}")
    timeline.add("DELETE session", status=response.status_code)
    time.sleep(3.0)


def reject(server: OpenCodeServer, sid: str, timeline: _Timeline) -> None:
    mid = server.send_prompt(sid, "TOOL please")
    timeline.add("prompt_async TOOL", message_id=mid)
    request = server.wait_for_permission(sid)
    time.sleep(1.0)
    server.reply_permission(request["id"], "reject")
    timeline.add("permission reply reject", request_id=request["id"])
    time.sleep(3.0)


SCENARIOS: dict[str, Scenario] = {
    "unknown-agent": unknown_agent,
    "unknown-model": unknown_model,
    "provider-400": provider_400,
    "no-reply": no_reply,
    "shell": shell,
    "session-deleted": delete,
    "permission-reject": reject,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as work,
        FakeLLM() as llm,
        OpenCodeServer(Path(work), llm.base_url) as server,
    ):
        warm = server.create_session()
        server.wait_for_reply(warm, server.send_prompt(warm, "warm up"), timeout=60.0)
        for name in args.scenarios.split(","):
            recorders = [
                _Recorder(server, "/event", args.out / f"{name}.event.sse"),
                _Recorder(server, "/global/event", args.out / f"{name}.global-event.sse"),
            ]
            for recorder in recorders:
                recorder.start()
            time.sleep(0.7)
            timeline = _Timeline()
            sid = server.create_session()
            timeline.add("POST /session", session_id=sid)
            SCENARIOS[name](server, sid, timeline)
            for recorder in recorders:
                recorder.stop()
            (args.out / f"{name}.timeline.json").write_text(
                json.dumps({"scenario": name, "steps": timeline.steps}, indent=1) + "\n"
            )
            print(name, "recorded")


if __name__ == "__main__":
    main()
