"""Runs the real daemon against a hostile loopback server and prints what it cost (issue 9 figures).

    .venv/bin/python scripts/measure_attacks.py endless-line|big-event|big-answer|malformed|idle

Prints the daemon's peak RSS (VmHWM), how many log lines it wrote and its counters of interest.
Not a test: the numbers depend on the machine. The tests check the behaviour behind them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
from anyio.abc import ByteStream

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile import (  # noqa: E402 - after the path set-up above
    CONNECTED,
    HEARTBEAT,
    SSE_HEAD,
    Request,
    answer_json,
    hostile_server,
)

MB = 1024 * 1024


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


async def endless_line(request: Request, stream: ByteStream) -> None:
    if request.path != "/global/event":
        await answer_json(stream, b"[]")
        return
    await stream.send(SSE_HEAD + CONNECTED + b"data: ")
    chunk = b"x" * 65536
    while True:  # about 10 MB/s, as in the issue
        await stream.send(chunk)
        await anyio.sleep(0.006)


async def big_event(request: Request, stream: ByteStream) -> None:
    if request.path != "/global/event":
        await answer_json(stream, b"[]")
        return
    await stream.send(SSE_HEAD + CONNECTED + b'data: {"directory":"/w","payload":{"x":"')
    chunk = b"y" * MB
    for _ in range(50):
        await stream.send(chunk)
    await stream.send(b'"}}\n\n')
    while True:
        await stream.send(HEARTBEAT)
        await anyio.sleep(1)


async def big_answer(request: Request, stream: ByteStream) -> None:
    if request.path == "/global/event":
        await stream.send(SSE_HEAD + CONNECTED)
        while True:
            await anyio.sleep(1)
            await stream.send(HEARTBEAT)
    if request.path == "/session/status":
        await answer_json(stream, b'{"x":"' + b"z" * (40 * MB) + b'"}')
        return
    await answer_json(stream, b"[]")


async def malformed(request: Request, stream: ByteStream) -> None:
    if request.path != "/global/event":
        await answer_json(stream, b"[]")
        return
    await stream.send(SSE_HEAD + CONNECTED)
    for i in range(5000):
        await stream.send(b"data: {not json %d\n\n" % i)
    while True:
        await anyio.sleep(1)
        await stream.send(HEARTBEAT)


async def idle(request: Request, stream: ByteStream) -> None:
    if request.path != "/global/event":
        await answer_json(stream, b"[]")
        return
    await stream.send(SSE_HEAD + CONNECTED)
    while True:
        await anyio.sleep(1)
        await stream.send(HEARTBEAT)


START_MS = int(time.time() * 1000)


def prompts(count: int) -> bytes:
    return b"".join(
        b'data: {"directory":"/w","payload":{"type":"message.updated","properties":{"info":'
        b'{"role":"user","sessionID":"ses_%d","id":"msg_%d","time":{"created":%d}}}}}\n\n'
        % (i, i, START_MS)
        for i in range(count)
    )


def stalls(count: int) -> Callable[[Request, ByteStream], Awaitable[None]]:
    """``count`` prompts that never get a reply; REST agrees (busy sessions, no reply yet)."""

    async def handler(request: Request, stream: ByteStream) -> None:
        if request.path == "/session/status":
            busy = {f"ses_{i}": {"type": "busy"} for i in range(count)}
            await answer_json(stream, json.dumps(busy).encode())
            return
        if match := re.fullmatch(r"/session/ses_(\d+)/message", request.path):
            i = int(match.group(1))
            info = {"role": "user", "id": f"msg_{i}", "sessionID": f"ses_{i}"}
            body = [{"info": {**info, "time": {"created": START_MS}}, "parts": []}]
            await answer_json(stream, json.dumps(body).encode())
            return
        if request.path != "/global/event":
            await answer_json(stream, b"[]")
            return
        await stream.send(SSE_HEAD + CONNECTED + prompts(count))
        while True:
            await anyio.sleep(1)
            await stream.send(HEARTBEAT)

    return handler


ATTACKS = {
    "endless-line": (endless_line, 40.0),
    "big-event": (big_event, 15.0),
    "big-answer": (big_answer, 15.0),
    "malformed": (malformed, 10.0),
    "idle": (idle, 10.0),
    # 5 000 prompts that stall after 1 s, their alerts posted to a port nobody listens on.
    "stalls-dead-webhook": (stalls(5000), 20.0),
    # 200 stalls, then SIGTERM at once: a slow live webhook and a dead one.
    "sigterm": (stalls(200), 3.0),
}


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def slow_webhook(request: Request, stream: ByteStream) -> None:
    await anyio.sleep(0.05)  # a receiver that takes 50 ms per alert
    await answer_json(stream, b"{}")


async def main(name: str) -> None:
    handler, seconds = ATTACKS[name]
    extra: list[str] = []
    if name.startswith(("stalls", "sigterm")):
        extra = ["--first-response-timeout", "1s", "--webhook", f"http://127.0.0.1:{dead_port()}/"]
    async with hostile_server(handler) as url, hostile_server(slow_webhook) as hook:
        if name == "sigterm":
            extra += ["--webhook", hook + "/live", "--shutdown-grace", "5s"]
        port = 19000 + os.getpid() % 1000
        proc = await anyio.open_process(
            [
                str(ROOT / ".venv/bin/opencode-watchdog"),
                "run",
                "--server",
                f"oc={url}",
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
                *extra,
            ],
            stderr=subprocess.STDOUT,
        )
        lines = 0
        tail: list[str] = []
        by_event: dict[str, int] = {}
        flushed: list[str] = []

        async def count_lines() -> None:
            nonlocal lines
            assert proc.stdout is not None
            buffer = b""
            async for data in proc.stdout:
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                lines += len(complete)
                for c in complete:
                    event = re.search(rb'"event": "([^"]+)"', c)
                    key = event.group(1).decode() if event else "?"
                    by_event[key] = by_event.get(key, 0) + 1
                    if key in ("alerts.flushed", "alert.undelivered", "alerts.flushing"):
                        flushed.append(c.decode())
                tail[:] = [c.decode(errors="replace")[:160] for c in complete[-3:]] or tail

        async with anyio.create_task_group() as tg:
            tg.start_soon(count_lines)
            started = time.monotonic()
            await anyio.sleep(seconds)
            rss = peak_rss_mb(proc.pid)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            proc.terminate()
            await proc.wait()
            tg.cancel_scope.cancel()
    wanted = ("oversized", "malformed", "reconnects", "task_restarts", "suppressed")
    print(
        f"attack {name}: {time.monotonic() - started:.0f} s, peak RSS {rss:.1f} MB, {lines} log lines"
    )
    for line in metrics.splitlines():
        if (
            not line.startswith("#")
            and any(w in line for w in wanted)
            and not line.endswith(" 0.0")
            and "_created" not in line
        ):
            print("  " + line)
    print("  log lines by event: " + json.dumps(dict(sorted(by_event.items()))))
    for line in flushed:
        print("  " + line)
    for line in tail:
        print("  last log: " + line)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
