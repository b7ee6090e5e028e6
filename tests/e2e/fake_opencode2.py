"""A fake OpenCode 2 (`opencode2 serve`) for the end-to-end tests: the real one cannot be installed
here (the npm registry these machines reach has only `opencode-ai` 1.18.33).

It serves what the watchdog reads of an OpenCode 2 server, in the shapes of the upstream schema
(anomalyco/opencode, ``packages/protocol/src/groups``): `GET /api/info`, `GET /api/event` (the
first frame ``server.connected``, then what the test sends, and a ``: heartbeat`` comment every
``heartbeat`` seconds, 15 s on a real server), `GET /api/session/active`, and per session
`/message`, `/inbox` and `/permission`. Every route wants HTTP basic auth, as OpenCode 2's do.

A test plays a stream of ``tests/fixtures/opencode2`` with ``play``: a real 2.0.16 recording
(``recording("turn")``: ``amx-2.0.16/events/turn.jsonl``, one event a line as the server made it)
or a reconstructed ``*.api-event.sse`` (written after real 2.0.12/2.0.19 streams), see SOURCES
there; or it sends events it builds (``Events``): those are synthetic, from the schema, and the
tests say so. Events are re-stamped as they are sent: ``id`` and ``created`` get the current time,
as a live server's would; the SSE framing, ``server.connected`` and the heartbeat comments are the
fake's own.
"""

from __future__ import annotations

import base64
import json
import queue
import secrets
import string
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent.parent / "fixtures" / "opencode2"
VERSION = "2.0.18"
_B62 = string.ascii_letters + string.digits
_CLOSE = object()  # queued: end the current stream (the server restarted, say)


def new_id(prefix: str, ms: int | None = None) -> str:
    """An id in OpenCode's ascending form: 12 hex digits of (ms * 4096 + counter), then random."""
    now = int(time.time() * 1000) if ms is None else ms
    value = (now * 4096 + secrets.randbelow(4096)) % (1 << 48)
    return f"{prefix}_{value:012x}" + "".join(secrets.choice(_B62) for _ in range(14))


def recording(name: str) -> str:
    """The fixture name of a real 2.0.16 recording (``turn``, ``steer``, ``interrupt``,
    ``permission``, ``question``, ``failure``)."""
    return f"amx-2.0.16/events/{name}"


def fixture_events(name: str) -> list[dict[str, Any] | None]:
    """A fixture stream as envelopes in order; None stands for a heartbeat comment (a recording,
    ``<name>.jsonl``, has none: its recorder sat behind the client)."""
    recorded = FIXTURES / f"{name}.jsonl"
    if recorded.exists():
        lines = recorded.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    text = (FIXTURES / f"{name}.api-event.sse").read_text(encoding="utf-8")
    events: list[dict[str, Any] | None] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            events.append(json.loads(block[6:]))
        elif block.startswith(":"):
            events.append(None)
    return events


class Events:
    """Builds synthetic OpenCode 2 events for one session (from the schema)."""

    def __init__(self, directory: str = "/home/dev/project") -> None:
        self.session = new_id("ses")
        self.directory = directory

    def ev(self, etype: str, **data: Any) -> dict[str, Any]:
        return {
            "type": etype,
            "location": {"directory": self.directory},
            "data": {"sessionID": self.session, **data},
        }

    def prompt(
        self, inbox: str | None = None, delivery: str = "steer"
    ) -> tuple[str, dict[str, Any]]:
        inbox = inbox or new_id("msg")
        item = {"type": "user", "payload": {"text": "[prompt]"}, "delivery": delivery}
        return inbox, self.ev("session.inbox.enqueued", inboxID=inbox, item=item)

    def turn(self, inbox: str, reply: str) -> list[dict[str, Any]]:
        """A prompt's execution up to its step's start: the loop took it, a reply opens."""
        return [
            self.ev("session.execution.started"),
            self.ev("session.inbox.delivered", inboxID=inbox),
            self.ev(
                "session.step.started",
                assistantMessageID=reply,
                agent="build",
                model={"id": "fake-2", "providerID": "fake"},
            ),
        ]

    def text(self, reply: str) -> dict[str, Any]:
        return self.ev("session.text.delta", assistantMessageID=reply, ordinal=0, delta="[reply]")

    def ended(self, reply: str, finish: str = "stop") -> dict[str, Any]:
        tokens = {"input": 100, "output": 10, "reasoning": 0, "cache": {"read": 0, "write": 0}}
        return self.ev(
            "session.step.ended", assistantMessageID=reply, finish=finish, cost=0.001, tokens=tokens
        )


class FakeOpenCode2:
    """The fake server; ``send``/``play`` feed the open stream, the REST state is set directly."""

    def __init__(self, heartbeat: float = 1.0, password: str | None = None) -> None:
        self.heartbeat = heartbeat
        self.password = password or secrets.token_urlsafe(12)
        self.active: set[str] = set()  # GET /api/session/active
        self.messages: dict[str, list[dict[str, Any]]] = {}  # GET .../message, oldest first
        self.inbox: dict[str, list[dict[str, Any]]] = {}
        self.permissions: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[str] = []  # the paths asked, in order
        self.heartbeats = True  # False: the stream falls silent, comments and all
        self.streams = 0  # `/api/event` connections so far
        self.pid = 4242  # what /api/info says: a test changes it to play a restart
        self.version = VERSION  # what /api/info says
        self._queue: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeOpenCode2:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(_CLOSE)
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenCode2:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def server_arg(self, name: str = "oc2") -> str:
        return f"{name}={self.url}"

    def daemon_env(self) -> dict[str, str]:
        return {"OPENCODE_SERVER_PASSWORD": self.password}

    # -- the stream ---------------------------------------------------------------------------

    def send(self, *events: dict[str, Any]) -> None:
        """Send events on the open stream (re-stamped with the current time)."""
        for event in events:
            self._queue.put(event)

    def play(self, name: str, pause: float = 0.02, max_gap: float = 0.0) -> None:
        """Send a fixture stream in order; heartbeat comments in it become sends of one.

        ``max_gap`` > 0 keeps the recorded gaps between events, each cut to at most that many
        seconds (a test of timers that a person's wait must pause); else ``pause`` between events.
        """
        previous: float | None = None
        for event in fixture_events(name):
            if event is None:
                self._queue.put(None)
                continue
            if event["type"] == "server.connected":
                continue  # every connection gets its own
            created = event.get("created")
            if max_gap > 0 and isinstance(created, int | float):
                if previous is not None:
                    time.sleep(min(max_gap, max(0.0, (created - previous) / 1000.0)))
                previous = created
            else:
                time.sleep(pause)
            self._queue.put(event)

    def close_stream(self) -> None:
        """End the current `/api/event` response, as a restarting server would."""
        self._queue.put(_CLOSE)

    # -- HTTP ---------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    fake.requests.append(path)
                if not self._authorized():
                    self._send(
                        401, b"", "text/plain", {"www-authenticate": 'Basic realm="Secure Area"'}
                    )
                    return
                if path == "/api/event":
                    self._stream()
                    return
                body = fake._rest(path)
                if body is None:
                    self._send(404, b"", "text/plain")
                else:
                    self._send(200, json.dumps(body).encode(), "application/json")

            def _authorized(self) -> bool:
                expected = base64.b64encode(f"opencode:{fake.password}".encode()).decode()
                return self.headers.get("authorization") == f"Basic {expected}"

            def _send(
                self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache, no-transform")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                with fake._lock:
                    fake.streams += 1
                try:
                    connected = {"id": new_id("evt"), "type": "server.connected", "data": {}}
                    self._chunk(_frame(connected))
                    next_beat = time.monotonic() + fake.heartbeat
                    while True:
                        wait = max(0.0, next_beat - time.monotonic())
                        try:
                            item = fake._queue.get(timeout=wait)
                        except queue.Empty:
                            if fake.heartbeats:
                                self._chunk(b": heartbeat\n\n")
                            next_beat = time.monotonic() + fake.heartbeat
                            continue
                        if item is _CLOSE:
                            self._chunk(b"")  # the last chunk: the server closed the stream
                            return
                        if item is None:
                            if fake.heartbeats:
                                self._chunk(b": heartbeat\n\n")
                            continue
                        assert isinstance(item, dict)
                        event = _stamped(item)
                        fake._mirror(event)  # REST says what the stream said, never ahead of it
                        self._chunk(_frame(event))
                except (BrokenPipeError, ConnectionResetError):
                    return

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler

    def _mirror(self, event: dict[str, Any]) -> None:
        """Keep the REST state as a server's projection of its own events would be: the running
        sessions, the pending requests, and each session's timeline."""
        etype, data = event.get("type"), event.get("data")
        if not isinstance(data, dict):
            return
        sid = data.get("sessionID")
        if etype == "form.created" and isinstance(data.get("form"), dict):
            sid = data["form"].get("sessionID")
        if not isinstance(sid, str):
            return
        with self._lock:
            timeline = self.messages.setdefault(sid, [])
            requests = self.permissions.setdefault(sid, [])
            if etype == "session.execution.started":
                self.active.add(sid)
            elif etype in (
                "session.execution.succeeded",
                "session.execution.failed",
                "session.execution.interrupted",
            ):
                self.active.discard(sid)
            elif etype == "permission.asked":
                requests.append({"id": data["id"], "sessionID": sid})
            elif etype == "permission.replied":
                requests[:] = [r for r in requests if r["id"] != data.get("requestID")]
            elif etype == "session.inbox.enqueued":
                item = data.get("item")
                if isinstance(item, dict) and item.get("type") == "user":
                    # Enqueued, not yet delivered: `/inbox` lists it, the timeline not yet.
                    inbox = self.inbox.setdefault(sid, [])
                    inbox.append(
                        {
                            "id": data["inboxID"],
                            "type": "user",
                            "time": {"created": event["created"]},
                        }
                    )
            elif etype == "session.inbox.delivered":
                inbox = self.inbox.setdefault(sid, [])
                inbox[:] = [i for i in inbox if i["id"] != data.get("inboxID")]
                # A user message's `time.created` is its delivery's (the 2.0.16 message lists).
                created = event["created"]
                timeline.append(
                    {"id": data["inboxID"], "type": "user", "time": {"created": created}}
                )
            elif etype == "session.step.started":
                timeline.append(
                    {
                        "id": data["assistantMessageID"],
                        "type": "assistant",
                        "time": {"created": event["created"]},
                        "content": [],
                    }
                )
            elif isinstance(mid := data.get("assistantMessageID"), str):
                step = next((m for m in timeline if m["id"] == mid), None)
                if step is None:
                    return
                if isinstance(etype, str) and etype.startswith(
                    ("session.text.", "session.reasoning.", "session.tool.")
                ):
                    step["content"] = [{"type": "text", "text": "[reply]"}]
                elif etype == "session.step.ended":
                    step["finish"] = data.get("finish")
                    step["time"]["completed"] = event["created"]
                elif etype == "session.step.failed":
                    step["error"] = data.get("error")
                    step["time"]["completed"] = event["created"]

    def _rest(self, path: str) -> object | None:
        if path == "/api/info":
            return {
                "version": self.version,
                "pid": self.pid,
                "urls": [self.url],
                "paths": {"tmp": "/tmp"},
            }
        if path == "/api/session/active":
            with self._lock:
                return {"data": {sid: {"type": "running"} for sid in sorted(self.active)}}
        parts = path.split("/")
        if len(parts) == 5 and parts[1:3] == ["api", "session"]:
            sid, what = parts[3], parts[4]
            with self._lock:
                if what == "message":
                    newest_first = [dict(m) for m in reversed(self.messages.get(sid, []))]
                    return {"data": newest_first, "cursor": {}}
                if what == "inbox":
                    return {"data": list(self.inbox.get(sid, []))}
                if what == "permission":
                    return {"data": list(self.permissions.get(sid, []))}
        return None


def _stamped(event: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "id": new_id("evt", now),
        "created": now,
        **{k: v for k, v in event.items() if k not in ("id", "created")},
    }


def _frame(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def timeline_reply(prompt: str, reply: str, created_ms: int) -> list[dict[str, Any]]:
    """`/message` items of a prompt answered in one step (the 2.0.19 timeline's shape)."""
    return [
        {"id": prompt, "type": "user", "time": {"created": created_ms}, "text": "[prompt]"},
        {
            "id": reply,
            "type": "assistant",
            "time": {"created": created_ms + 10, "completed": created_ms + 500},
            "agent": "build",
            "model": {"id": "fake-2", "providerID": "fake"},
            "content": [{"type": "text", "text": "[reply]"}],
            "finish": "stop",
        },
        {
            "id": new_id("msg"),
            "type": "idle",
            "time": {"created": created_ms + 501},
            "outcome": "succeeded",
        },
    ]


def session_of(name: str) -> str:
    """The session id a fixture stream is about."""
    for event in fixture_events(name):
        if (
            event is not None
            and isinstance(event.get("data"), dict)
            and "sessionID" in event["data"]
        ):
            return str(event["data"]["sessionID"])
    raise AssertionError(f"no session in {name}")


def inbox_ids(name: str) -> Sequence[str]:
    """The prompts (inbox ids) a fixture stream enqueues, in order."""
    return [
        e["data"]["inboxID"]
        for e in fixture_events(name)
        if e is not None and e["type"] == "session.inbox.enqueued"
    ]
