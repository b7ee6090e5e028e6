"""structlog set-up: JSON lines when stdout is not a terminal, readable columns when it is.

A flood of one log event (a server sending 5 000 malformed lines, a dead webhook) is cut down by
``LogLimiter``: per event name and server, the first few lines of each minute get through, the
rest are counted and reported in one summary line. Metrics still count every occurrence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Lines per event and server let through in each window; the rest become one summary.
DEFAULT_BURST = 5
DEFAULT_WINDOW = 60.0
# Records about one prompt (every stall must be logged) and the daemon's own life are never cut.
EXEMPT_PREFIXES = ("prompt.", "daemon.", "config.", "log.")
MAX_KEYS = 1000  # event names x servers is small; this only guards against a bug

_Key = tuple[str, str]


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """How many lines of one event and server were held back in the last window."""

    event: str
    source: str
    count: int
    level: str
    seconds: float


class LogLimiter:
    """A structlog processor that rate-limits repeated events, keyed by event name and server.

    ``flush()`` returns the summaries of windows that have ended; the daemon logs them
    periodically, so a flood that stops is still reported.
    """

    def __init__(
        self,
        *,
        burst: int = DEFAULT_BURST,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._windows: dict[_Key, _Window] = {}
        self._pending: list[Suppressed] = []

    def __call__(
        self, _logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event = str(event_dict.get("event", ""))
        if event.startswith(EXEMPT_PREFIXES):
            return event_dict
        # The server a line is about; sinks name their destination instead.
        source = str(event_dict.get("server") or event_dict.get("to") or "")
        key = (event, source)
        now = self._clock()
        current = self._windows.get(key)
        if current is not None and now - current.start >= self.window:
            self._close(key, current, now)
            current = None
        if current is None:
            if len(self._windows) >= MAX_KEYS:
                return event_dict
            current = self._windows[key] = _Window(start=now)
        if current.passed < self.burst:
            current.passed += 1
            return event_dict
        current.suppressed += 1
        current.level = method_name
        raise structlog.DropEvent

    def flush(self, *, everything: bool = False) -> list[Suppressed]:
        """Summaries of every ended window (``everything``: every window, as at shutdown) that
        held lines back, each reported once."""
        now = self._clock()
        for key, window in list(self._windows.items()):
            if everything or now - window.start >= self.window:
                self._close(key, window, now)
        pending, self._pending = self._pending, []
        return pending

    def _close(self, key: _Key, window: _Window, now: float) -> None:
        del self._windows[key]
        if window.suppressed:
            seconds = min(self.window, now - window.start)
            self._pending.append(
                Suppressed(key[0], key[1], window.suppressed, window.level, seconds)
            )


_active: list[LogLimiter] = []  # the limiter configure() installed, if any


def report_suppressed(limiter: LogLimiter | None = None, *, everything: bool = False) -> int:
    """Log one summary line per flooded event and server; returns how many lines were held back.

    Without ``limiter``, reports for the one ``configure()`` installed.
    """
    limiters = [limiter] if limiter is not None else _active
    log = structlog.get_logger("watchdog.logs")
    total = 0
    for s in [s for lim in limiters for s in lim.flush(everything=everything)]:
        total += s.count
        level = s.level if s.level in ("warning", "error", "critical") else "info"
        getattr(log, level)(
            "log.suppressed",
            suppressed_event=s.event,
            server=s.source or None,
            count=s.count,
            message=f"{s.count} more like this in the last {_span(s.seconds)}",
        )
    return total


def _span(seconds: float) -> str:
    return "minute" if round(seconds) == 60 else f"{seconds:.0f} s"


# On a terminal the fields people scan for come first, in this order; the rest follow as logged.
CONSOLE_FIRST = (
    "kind",
    "outcome",
    "server",
    "waited_seconds",
    "duration_seconds",
    "reason",
    "session_id",
    "message_id",
)
# Long fields a terminal shows only where they are news: the prompt's first line says them once.
CONSOLE_SECONDS = {"waited_seconds": "waited", "duration_seconds": "took"}
CONSOLE_NAMES = {"session_id": "session", "message_id": "message"}
CONSOLE_ONCE = {"accepted_at": (), "directory": ("prompt.accepted",)}


def console_fields(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Reorder (and trim) a log event's fields for a person reading a terminal."""
    event = event_dict.get("event")
    ordered: dict[str, Any] = {}
    for key in ("timestamp", "level", "event", *CONSOLE_FIRST):
        if key in event_dict:
            ordered[key] = event_dict[key]
    for key, value in event_dict.items():
        if key in ordered or (key in CONSOLE_ONCE and event not in CONSOLE_ONCE[key]):
            continue
        ordered[key] = value
    short: dict[str, Any] = {}
    for key, value in ordered.items():
        if key in CONSOLE_SECONDS and isinstance(value, int | float):
            short[CONSOLE_SECONDS[key]] = f"{value:.1f}s"
        elif key == "provider" and "model" in ordered:
            short["model"] = f"{value}/{ordered['model']}"
        elif key == "model" and "provider" in ordered:
            continue
        else:
            short[CONSOLE_NAMES.get(key, key)] = value
    return short


def configure(
    log_format: str, level: str, stream: TextIO, *, limiter: LogLimiter | None = None
) -> None:
    """Route every structlog logger to ``stream`` in the chosen format, flood-limited."""
    limiter = limiter or LogLimiter()
    _active[:] = [limiter]
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    tail: list[structlog.typing.Processor] = (
        [structlog.processors.JSONRenderer()]
        if as_json
        else [
            console_fields,
            structlog.dev.ConsoleRenderer(
                colors=stream.isatty(), sort_keys=False, pad_event_to=18, pad_level=False
            ),
        ]
    )
    structlog.configure(
        processors=[
            limiter,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso" if as_json else "%H:%M:%SZ", utc=True),
            structlog.processors.format_exc_info,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
