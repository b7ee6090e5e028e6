"""In-process fake OpenAI-compatible streaming LLM whose behaviour is keyed on the prompt text."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

TITLE_PREFIX = "You are a title generator"
NORMAL_REPLY_TOKENS = ("Hello ", "from ", "the ", "fake ", "model.")
NORMAL_REPLY = "".join(NORMAL_REPLY_TOKENS)
TITLE_REPLY = "Fake title"
FAIL_MESSAGE = "upstream exploded"
BADREQUEST_MESSAGE = "the fake rejects this request"
HANGMID_TOKENS = ("Partial ", "answer ", "then ")
TOOL_ARGUMENTS = {"command": "echo hi", "description": "say hi"}
DEFAULT_SLOW_TOKENS = 8
MODEL_ID = "fake-1"

_SLOW_RE = re.compile(r"SLOW(\d+)?")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, with the mode it chose for it."""

    at: float
    method: str
    path: str
    mode: str
    last_user: str
    last_role: str | None
    stream: bool
    body: dict[str, Any] = field(repr=False)

    @property
    def is_title(self) -> bool:
        """Whether this was opencode's title-generation side request."""
        return self.mode == "title"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def choose_mode(messages: list[dict[str, Any]]) -> tuple[str, str, str | None, int]:
    """Return (mode, last user text, last role, slow token count) for a chat request."""
    systems = [_text_of(m.get("content")) for m in messages if m.get("role") == "system"]
    last_user = ""
    for m in reversed(messages):
        if m.get("role") == "user":
            last_user = _text_of(m.get("content"))
            break
    last_role = messages[-1].get("role") if messages else None
    slow_tokens = DEFAULT_SLOW_TOKENS
    # Title requests must never hang or fail, otherwise HANG/FAIL would affect two requests.
    if any(s.lstrip().startswith(TITLE_PREFIX) for s in systems):
        mode = "title"
    elif "HANGMID" in last_user:
        mode = "hangmid"
    elif "HANG" in last_user:
        mode = "hang"
    elif "FAIL" in last_user:
        mode = "fail"
    elif "BADREQUEST" in last_user:
        mode = "badrequest"
    elif "WARMUP" in last_user:
        mode = "warmup"  # answered like "normal", counted apart so tests' counts stay their own
    elif match := _SLOW_RE.search(last_user):
        mode = "slow"
        if match.group(1):
            slow_tokens = int(match.group(1))
    elif "TOOL" in last_user and last_role != "tool":
        mode = "tool"
    else:
        mode = "normal"
    return mode, last_user, last_role if isinstance(last_role, str) else None, slow_tokens


class _StoppedError(Exception):
    """Raised inside a handler when the fake is shutting down mid-stream."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines would only clutter pytest output; the request list is the record.
        return

    def _json(self, code: int, obj: object) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # Without a length or chunking, closing the connection is what ends the body.
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _chunk(
        self,
        cid: str,
        delta: dict[str, Any],
        finish: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            obj["usage"] = usage
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()

    def _done(self) -> None:
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _pause(self, seconds: float) -> None:
        if self.server.stop_event.wait(seconds):
            raise _StoppedError

    def _hold(self) -> None:
        # Bounded so a forgotten hang can never outlive a test run by much.
        self.server.stop_event.wait(self.server.hang_seconds)
        self.close_connection = True

    def _stream_text(self, cid: str, tokens: list[str] | tuple[str, ...], delay: float) -> None:
        self._start_sse()
        self._chunk(cid, {"role": "assistant", "content": ""})
        for token in tokens:
            self._pause(delay)
            self._chunk(cid, {"content": token})
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": len(tokens),
            "total_tokens": 10 + len(tokens),
        }
        self._chunk(cid, {}, finish="stop", usage=usage)
        self._done()

    def _complete_text(self, cid: str, text: str) -> None:
        self._json(
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL_ID,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            },
        )

    def _tool_call(self, cid: str) -> None:
        self._start_sse()
        call = {
            "index": 0,
            "id": "call_" + uuid.uuid4().hex[:8],
            "type": "function",
            "function": {"name": "bash", "arguments": ""},
        }
        self._chunk(cid, {"role": "assistant", "content": None, "tool_calls": [call]})
        args = json.dumps(TOOL_ARGUMENTS)
        for i in range(0, len(args), 16):
            self._pause(0.02)
            piece = {"index": 0, "function": {"arguments": args[i : i + 16]}}
            self._chunk(cid, {"tool_calls": [piece]})
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        self._chunk(cid, {}, finish="tool_calls", usage=usage)
        self._done()

    def do_GET(self) -> None:
        self.server.record(
            RecordedRequest(time.time(), "GET", self.path, "models", "", None, False, {})
        )
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fake"}
            self._json(200, {"object": "list", "data": [model]})
            return
        self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            parsed = {}
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": "not found"}})
            return
        raw_messages = body.get("messages")
        messages = (
            [m for m in raw_messages if isinstance(m, dict)]
            if isinstance(raw_messages, list)
            else []
        )
        mode, last_user, last_role, slow_tokens = choose_mode(messages)
        stream = bool(body.get("stream"))
        request = RecordedRequest(
            time.time(), "POST", self.path, mode, last_user, last_role, stream, body
        )
        self.server.record(request)
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        try:
            self._respond(mode, cid, stream, slow_tokens)
        except (_StoppedError, BrokenPipeError, ConnectionResetError):
            # The client went away or the fake is stopping: dropping the stream is the point.
            self.close_connection = True

    def _respond(self, mode: str, cid: str, stream: bool, slow_tokens: int) -> None:
        if mode == "hang":
            self._hold()
        elif mode == "fail":
            self._json(500, {"error": {"message": FAIL_MESSAGE}})
        elif mode == "badrequest":
            # A 400 is not retried by OpenCode: the prompt fails at once with an API error.
            self._json(400, {"error": {"message": BADREQUEST_MESSAGE}})
        elif mode == "hangmid":
            self._start_sse()
            self._chunk(cid, {"role": "assistant", "content": ""})
            for token in HANGMID_TOKENS:
                self._pause(0.1)
                self._chunk(cid, {"content": token})
            self._hold()
        elif mode == "title":
            if stream:
                self._stream_text(cid, ["Fake", " title"], delay=0.0)
            else:
                self._complete_text(cid, TITLE_REPLY)
        elif mode == "slow":
            tokens = [f"tick{i} " for i in range(1, slow_tokens + 1)]
            self._stream_text(cid, tokens, delay=self.server.slow_interval)
        elif mode == "tool":
            self._tool_call(cid)
        elif mode == "warmup":
            self._stream_text(cid, NORMAL_REPLY_TOKENS, delay=0.0)
        elif stream:
            self._stream_text(cid, NORMAL_REPLY_TOKENS, delay=0.02)
        else:
            self._complete_text(cid, NORMAL_REPLY)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hang_seconds: float, slow_interval: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stop_event = threading.Event()
        self.hang_seconds = hang_seconds
        self.slow_interval = slow_interval
        self.lock = threading.Lock()
        self.requests: list[RecordedRequest] = []

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)


class FakeLLM:
    """Fake LLM on 127.0.0.1 (free port), served from a daemon thread until stop()."""

    def __init__(self, hang_seconds: float = 600.0, slow_interval: float = 1.0) -> None:
        self._server = _Server(hang_seconds, slow_interval)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._started = False

    @property
    def port(self) -> int:
        """TCP port the fake listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Root URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL for opencode's provider config."""
        return f"{self.url}/v1"

    def start(self) -> FakeLLM:
        """Start serving; returns self for chaining."""
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    def stop(self) -> None:
        """Release every held (hung) request and stop serving."""
        self._server.stop_event.set()
        if self._started:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def reset(self) -> None:
        """Forget every request and release every held (hung) one; the fake keeps serving.

        For a fake shared by the tests of one worker: each test starts with no requests seen.
        """
        self._server.stop_event.set()  # wakes every held request (they end as at stop())
        self._server.stop_event.clear()
        with self._server.lock:
            self._server.requests.clear()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received so far, oldest first."""
        with self._server.lock:
            return list(self._server.requests)

    def chat_requests(self, mode: str | None = None) -> list[RecordedRequest]:
        """Chat-completion requests other than title generation, optionally of one mode.

        The harness's warm-up prompt (mode ``warmup``) is left out unless asked for by name: it
        is the fixture's, not the test's.
        """
        return [
            r
            for r in self.requests
            if r.method == "POST"
            and not r.is_title
            and (r.mode == mode if mode is not None else r.mode != "warmup")
        ]

    def request_count(self, mode: str | None = None) -> int:
        """Number of chat-completion requests (titles and the warm-up excluded), optionally of one mode."""
        return len(self.chat_requests(mode))

    def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 120.0
    ) -> RecordedRequest:
        """Return the first recorded request matching predicate, polling up to timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for r in self.requests:
                if predicate(r):
                    return r
            if time.monotonic() >= deadline:
                seen = [(r.mode, r.last_user[:60]) for r in self.requests]
                raise AssertionError(f"fake LLM got no matching request in {timeout}s; got {seen}")
            time.sleep(0.05)
