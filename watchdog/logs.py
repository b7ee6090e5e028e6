"""structlog set-up: JSON lines when stdout is not a terminal, readable columns when it is."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


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


def configure(log_format: str, level: str, stream: TextIO) -> None:
    """Route every structlog logger to ``stream`` in the chosen format."""
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
