"""`opencode-watchdog status`: a running daemon's `/status` as a readable table, or its JSON.

Exit code 0 when every stream is up and no prompt is stalled, 1 otherwise (a shell check), 3 when
the daemon cannot be read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

import httpx

EXIT_PROBLEM = 1
EXIT_UNREADABLE = 3
DEFAULT_URL = "http://127.0.0.1:9464"

_RESET = "\033[0m"
_COLOURS = {"red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "dim": "\033[2m"}
_GOOD = {"up", "ok", "replying", "waiting"}
_STEP_ORDER = ["session", "accepted", "stored", "no_error", "reply"]
_BAD = {"down", "auth_failed", "stalled", "failed"}


def add_parser(sub: Any) -> None:
    """Register the `status` subcommand."""
    status = sub.add_parser(
        "status",
        help="show a running daemon's streams, pending prompts and probes",
        description=(
            "Reads the daemon's /status. Exits 1 when a stream is down or a prompt is stalled, "
            "3 when the daemon cannot be read."
        ),
    )
    status.add_argument("--url", default=DEFAULT_URL, help=f"the daemon (default {DEFAULT_URL})")
    status.add_argument("--json", action="store_true", help="print /status as it came")


def main(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Fetch, print, and say by the exit code whether all is well."""
    url = args.url.rstrip("/") + "/status"
    try:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            response = client.get(url)
        document = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        print(f"opencode-watchdog status: cannot read {url}: {type(exc).__name__}", file=err)
        return EXIT_UNREADABLE
    if not isinstance(document, dict):
        print(f"opencode-watchdog status: {url} answered HTTP {response.status_code}", file=err)
        return EXIT_UNREADABLE
    if args.json:
        out.write(response.text if response.text.endswith("\n") else response.text + "\n")
    else:
        colour = out.isatty() and not os.environ.get("NO_COLOR")
        out.write(render(document, colour=colour))
    return EXIT_PROBLEM if problems(document) else 0


def problems(document: Mapping[str, Any]) -> list[str]:
    """What makes the exit code non-zero: streams not up, stalled prompts."""
    found: list[str] = []
    for server in _list(document.get("servers")):
        name = server.get("server")
        state = _dict(server.get("stream")).get("state")
        if state != "up":
            found.append(f"{name}: stream {state}")
        for prompt in _list(server.get("pending")):
            if prompt.get("state") == "stalled":
                found.append(f"{name}: prompt {prompt.get('message_id')} stalled")
    return found


def render(document: Mapping[str, Any], *, colour: bool = False) -> str:
    """The tables: servers, pending prompts (oldest first), latest probes, then a verdict."""
    now = _parse(document.get("now"))
    servers = _list(document.get("servers"))
    lines = [f"opencode-watchdog {document.get('version', '?')}, {document.get('now', '?')}", ""]
    rows = []
    for server in servers:
        stream = _dict(server.get("stream"))
        rows.append(
            [
                str(server.get("server")),
                _paint(str(stream.get("state")), colour),
                _ago(stream.get("since"), now),
                _ago(stream.get("last_event_at"), now),
                str(stream.get("reconnects", 0)),
                str(stream.get("last_error") or ""),
            ]
        )
    lines += _table(["SERVER", "STREAM", "SINCE", "LAST EVENT", "RECONNECTS", "ERROR"], rows)
    pending = [
        (server.get("server"), prompt)
        for server in servers
        for prompt in _list(server.get("pending"))
    ]
    pending.sort(key=lambda item: -float(item[1].get("age_seconds") or 0.0))
    lines += ["", f"PENDING PROMPTS ({len(pending)}, oldest first)"]
    if pending:
        lines += _table(
            ["SERVER", "STATE", "AGE", "SESSION", "MESSAGE", "DIRECTORY"],
            [
                [
                    str(name),
                    _paint(str(p.get("state")), colour),
                    _duration(float(p.get("age_seconds") or 0.0)),
                    str(p.get("session_id")),
                    str(p.get("message_id")),
                    str(p.get("directory") or ""),
                ]
                for name, p in pending
            ],
        )
    else:
        lines.append("none")
    probes = [probe for server in servers for probe in _list(server.get("probes"))]
    lines += ["", "PROBES"]
    if probes:
        lines += _table(
            ["SERVER", "SHAPE", "RESULT", "AT", "STEPS", "REASON"],
            [
                [
                    str(p.get("server")),
                    str(p.get("shape")),
                    _paint("ok" if p.get("ok") else f"failed at {p.get('failed_step')}", colour),
                    _ago(p.get("at"), now),
                    _steps(_dict(p.get("steps"))),
                    str(p.get("reason") or ""),
                ]
                for p in probes
            ],
        )
    else:
        lines.append("none (run the daemon with --probe-interval)")
    found = problems(document)
    lines.append("")
    lines.append(
        _paint("PROBLEM", colour) + ": " + "; ".join(found)
        if found
        else _paint("ok", colour) + ": every stream is up and no prompt is stalled"
    )
    return "\n".join(lines) + "\n"


def _steps(steps: Mapping[str, Any]) -> str:
    ordered = sorted(steps, key=lambda k: _STEP_ORDER.index(k) if k in _STEP_ORDER else 99)
    return ", ".join(f"{k} {float(steps[k]):.3f}s" for k in ordered)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(_visible(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    result = []
    for row in [list(header), *rows]:
        cells = [
            cell + " " * (width - _visible(cell)) for cell, width in zip(row, widths, strict=True)
        ]
        result.append("  ".join(cells).rstrip())
    return result


def _visible(text: str) -> int:
    for code in [_RESET, *_COLOURS.values()]:
        text = text.replace(code, "")
    return len(text)


def _paint(text: str, colour: bool) -> str:
    if not colour:
        return text
    word = text.split(" ", maxsplit=1)[0]
    name = (
        "green"
        if word in _GOOD
        else "red"
        if word in _BAD or text.startswith("failed")
        else "yellow"
    )
    return f"{_COLOURS[name]}{text}{_RESET}"


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _ago(value: object, now: datetime | None) -> str:
    at = _parse(value)
    if at is None:
        return "-"
    if now is None:
        return str(value)
    return _duration(max(0.0, (now - at).total_seconds())) + " ago"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
