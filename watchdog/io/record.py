"""`run --record FILE`: appends every received stream event, with its receive time, as JSON lines.

One line per event: ``{"at": <wall seconds>, "mono": <monotonic seconds>, "server": NAME,
"stream": PATH, "data": {...}}``, where ``data`` is the event as OpenCode sent it, with prompt and
reply text emptied (``watchdog.opencode.strip.strip_text``) unless ``--record-text`` is given. An
event that is not JSON is kept as ``"raw"`` only with ``--record-text``. What a reconnect read over
REST is recorded as the core received it, ``{"at", "mono", "server", "snapshot": {...}}`` (ids,
times and states; no text), so that a replay feeds the core exactly what the daemon fed it. When
the file passes ``max_bytes`` it is renamed to ``FILE.1`` (older ones to ``FILE.2``…, up to
``keep``) and a new one is started.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import IO, Any

import structlog

from watchdog.core.events import PromptSnapshot, ReplySnapshot, SessionRun, SessionSnapshot
from watchdog.opencode.strip import strip_text
from watchdog.opencode.wire import parse_json

log = structlog.get_logger("watchdog.record")

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP = 3


class Recorder:
    """Writes the recording; a write error stops recording (logged once), never the daemon."""

    def __init__(
        self,
        path: Path,
        *,
        text: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        self.path = path
        self.text = text
        self.max_bytes = max_bytes
        self.keep = keep
        self._file: IO[str] | None = None
        self._size = 0
        self._failed = False

    def open(self) -> None:
        """Open (append to) the file; raises OSError, which the CLI reports as a bad --record."""
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self._file.tell()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(
        self, server: str, stream: str, data: str, at: float, mono: float | None = None
    ) -> None:
        """Append one received event (``data`` is the SSE data field as received)."""
        if self._failed:
            return
        line: dict[str, Any] = {"at": round(at, 6), "server": server, "stream": stream}
        if mono is not None:
            line["mono"] = round(mono, 6)
        try:
            obj = parse_json(data)  # peer data: deep nesting or NaN must not stop the stream
        except ValueError:
            line["raw"] = data if self.text else None
        else:
            line["data"] = obj if self.text else strip_text(obj)
        self._append(line)

    def write_snapshots(
        self, server: str, snapshots: list[SessionSnapshot], at: float, mono: float
    ) -> None:
        """Append what a reconnect's REST read gave the core, one line per session."""
        if self._failed:
            return
        for snapshot in snapshots:
            self._append(
                {
                    "at": round(at, 6),
                    "mono": round(mono, 6),
                    "server": server,
                    "snapshot": snapshot_json(snapshot),
                }
            )

    def _append(self, line: dict[str, Any]) -> None:
        try:
            text = json.dumps(line, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError:  # a NaN or infinite time: JSON has none
            text = json.dumps(_finite(line), separators=(",", ":"), ensure_ascii=False)
        text += "\n"
        try:
            if self._file is None:
                self.open()
            elif self._size + len(text) > self.max_bytes and self._size > 0:
                self._rotate()
            assert self._file is not None
            self._file.write(text)
            self._file.flush()
            self._size += len(text.encode("utf-8"))
        except OSError as exc:
            self._failed = True
            log.error("record.failed", file=str(self.path), error=exc.strerror or str(exc))

    def _rotate(self) -> None:
        self.close()
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.keep > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self.open()


def snapshot_json(snapshot: SessionSnapshot) -> dict[str, Any]:
    """A snapshot as JSON (it holds ids, times and states only)."""
    return dataclasses.asdict(snapshot)


def snapshot_from_json(obj: object) -> SessionSnapshot | None:
    """A recorded snapshot back; None for anything that is not one (never raises)."""
    try:
        assert isinstance(obj, dict)
        prompts = obj.get("prompts")
        waiting = obj.get("waiting_on")
        run = obj.get("run")
        return SessionSnapshot(
            session_id=str(obj["session_id"]),
            run=None if run is None else SessionRun(run),
            taken_at=float(obj["taken_at"]),
            prompts=None
            if prompts is None
            else tuple(
                PromptSnapshot(
                    str(p["message_id"]),
                    None if p.get("created_at") is None else float(p["created_at"]),
                    tuple(ReplySnapshot(**r) for r in p.get("replies", ())),
                )
                for p in prompts
            ),
            directory=obj.get("directory"),
            attempt=obj.get("attempt"),
            retry_message=obj.get("retry_message"),
            next_retry_at=obj.get("next_retry_at"),
            waiting_on=None if waiting is None else tuple(str(w) for w in waiting),
            restarted=bool(obj.get("restarted")),
        )
    except (AssertionError, KeyError, TypeError, ValueError):
        return None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
