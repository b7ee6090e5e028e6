"""`opencode-watchdog status`: a running daemon's `/status` as a readable table, or its JSON.

Exit code 0 when all is well; 1 when a stream is not up, a stall fires, or a prompt failed or was
dropped within ``--since`` (15 minutes by default): a shell check; 2 for a bad command line; 3
when the daemon cannot be read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

import httpx

from watchdog.app.config import parse_duration
from watchdog.core.settings import ConfigError

EXIT_PROBLEM = 1
EXIT_UNREADABLE = 3
DEFAULT_URL = "http://127.0.0.1:9464"
DEFAULT_SINCE = 15 * 60.0
FINAL_KINDS = ("failed", "dropped")  # over at once: they count within --since, not while firing
MAX_RECENT_ROWS = 20
MAX_SESSION_ROWS = 20

_RESET = "\033[0m"
_COLOURS = {"red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "dim": "\033[2m"}
_GOOD = {"up", "ok", "replying", "waiting", "working", "idle"}
_STEP_ORDER = ["session", "accepted", "stored", "no_error", "reply"]
_BAD = {"down", "auth_failed", "stalled", "failed"}


def add_parser(sub: Any) -> None:
    """Register the `status` subcommand."""
    status = sub.add_parser(
        "status",
        help="show a running daemon's streams, pending prompts and probes",
        description=(
            "Reads the daemon's /status. Exits 1 when a stream is down, a stall fires, or a "
            "prompt failed or was dropped within --since; 3 when the daemon cannot be read."
        ),
    )
    status.add_argument("--url", default=DEFAULT_URL, help=f"the daemon (default {DEFAULT_URL})")
    status.add_argument(
        "--since",
        default="15m",
        type=_since,
        help="a failed or dropped prompt this recent makes the exit code 1 (default 15m)",
    )
    status.add_argument("--json", action="store_true", help="print /status as it came")


def main(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Fetch, print, and say by the exit code whether all is well."""
    url = args.url.rstrip("/") + "/status"
    try:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            response = client.get(url)
        document = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        print(
            f"opencode-watchdog status: cannot read {url} ({_why(exc)}): "
            "is the daemon running? (--url)",
            file=err,
        )
        return EXIT_UNREADABLE
    if not isinstance(document, dict):
        print(f"opencode-watchdog status: {url} answered HTTP {response.status_code}", file=err)
        return EXIT_UNREADABLE
    since = getattr(args, "since", DEFAULT_SINCE)
    if args.json:
        out.write(response.text if response.text.endswith("\n") else response.text + "\n")
    else:
        colour = out.isatty() and not os.environ.get("NO_COLOR")
        out.write(render(document, colour=colour, since=since))
    return EXIT_PROBLEM if problems(document, since) else 0


def _since(text: str) -> float:
    try:
        return parse_duration("--since", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _why(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer within 5 s"
    if isinstance(exc, ValueError):
        return "the answer is not JSON"
    return type(exc).__name__


def problems(document: Mapping[str, Any], since: float = DEFAULT_SINCE) -> list[str]:
    """What makes the exit code non-zero: streams not up, stalls firing, prompts that failed or
    were dropped within ``since`` seconds of the document's time."""
    found: list[str] = []
    stalled: set[tuple[object, object]] = set()
    for server in _list(document.get("servers")):
        name = server.get("server")
        state = _dict(server.get("stream")).get("state")
        if state != "up":
            found.append(f"{name}: stream {state}")
        for prompt in _list(server.get("pending")):
            if prompt.get("state") == "stalled":
                stalled.add((name, prompt.get("message_id")))
                found.append(f"{name}: prompt {prompt.get('message_id')} stalled")
    now = _parse(document.get("now"))
    for item in _list(document.get("recent")):
        kind, at, name = item.get("kind"), _parse(item.get("at")), item.get("server")
        which = item.get("message_id") or f"in session {item.get('session_id')}"
        if kind in FINAL_KINDS:
            ago = None if at is None or now is None else (now - at).total_seconds()
            if ago is not None and ago <= since:
                found.append(f"{name}: prompt {which} {kind} {_duration(max(0.0, ago))} ago")
        elif item.get("firing") is True and (name, item.get("message_id")) not in stalled:
            found.append(f"{name}: {kind} stall firing for prompt {which}")
    return found


def render(
    document: Mapping[str, Any], *, colour: bool = False, since: float = DEFAULT_SINCE
) -> str:
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
                str(server.get("api") or "-"),
                _paint(str(stream.get("state")), colour),
                _ago(stream.get("since"), now),
                _ago(stream.get("last_event_at"), now),
                str(stream.get("reconnects", 0)),
                str(stream.get("last_error") or ""),
            ]
        )
    lines += _table(["SERVER", "API", "STREAM", "SINCE", "LAST EVENT", "RECONNECTS", "ERROR"], rows)
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
    sessions = [
        (server.get("server"), session)
        for server in servers
        for session in _list(server.get("sessions"))
    ]
    sessions.sort(key=lambda item: float(item[1].get("idle_seconds") or 0.0))
    lines += ["", f"SESSIONS ({len(sessions)}, most recent first)"]
    if sessions:
        lines += _table(
            ["SERVER", "STATE", "LAST ACTIVITY", "PENDING", "LAST OUTCOME", "SESSION", "DIRECTORY"],
            [
                [
                    str(name),
                    _paint(str(v.get("words") or v.get("state")), colour),
                    _duration(float(v.get("idle_seconds") or 0.0)) + " ago",
                    str(v.get("pending", 0)),
                    _outcome(v, now),
                    str(v.get("session_id")),
                    str(v.get("directory") or ""),
                ]
                for name, v in sessions[:MAX_SESSION_ROWS]
            ],
        )
        if len(sessions) > MAX_SESSION_ROWS:
            lines.append(f"and {len(sessions) - MAX_SESSION_ROWS} more (--json)")
    else:
        lines.append("none seen since the daemon started")
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
    recent = _list(document.get("recent"))
    lines += ["", f"RECENT PROBLEMS ({len(recent)}, newest first)"]
    if recent:
        lines += _table(
            ["KIND", "AT", "WAITED", "NOW", "SERVER", "SESSION", "MESSAGE", "MODEL", "CAUSE"],
            [
                [
                    _paint(str(item.get("kind")), colour),
                    _ago(item.get("at"), now),
                    _duration(float(item.get("waited_seconds") or 0.0)),
                    _now_word(item),
                    str(item.get("server")),
                    str(item.get("session_id")),
                    str(item.get("message_id") or "-"),
                    _model(item),
                    _cause(item),
                ]
                for item in recent[:MAX_RECENT_ROWS]
            ],
        )
        if len(recent) > MAX_RECENT_ROWS:
            lines.append(f"and {len(recent) - MAX_RECENT_ROWS} more (--json)")
    else:
        lines.append("none since the daemon started")
    found = problems(document, since)
    lines.append("")
    lines.append(
        _paint("PROBLEM", colour) + ": " + "; ".join(found)
        if found
        else _paint("ok", colour)
        + ": every stream is up, no stall fires, and no prompt failed or was dropped in the last "
        + _duration(since)
    )
    return "\n".join(lines) + "\n"


def _now_word(item: Mapping[str, Any]) -> str:
    if item.get("outcome"):
        return f"ended {item.get('outcome')}"
    return "firing" if item.get("firing") else "resolved"


def _outcome(session: Mapping[str, Any], now: datetime | None) -> str:
    outcome = session.get("last_outcome")
    if not outcome:
        return "-"
    return f"{outcome} {_ago(session.get('last_outcome_at'), now)}"


def _model(item: Mapping[str, Any]) -> str:
    named = "/".join(str(x) for x in (item.get("provider"), item.get("model")) if x)
    if named:
        return named
    # As the page says it: a prompt that failed before it was stored named no model.
    return "unknown (not stored)" if item.get("message_id") is None else "-"


def _cause(item: Mapping[str, Any]) -> str:
    cause = _dict(item.get("cause"))
    text = cause.get("text") or item.get("why") or ""
    return str(text)


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
        "yellow"
        if text.startswith("waiting for a person")
        else "green"
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
