"""Reads values out of OpenCode's JSON without ever raising on what a peer sends.

Every wire format module (1.x stream, REST, probe bodies) checks fields through these helpers:
a wrong type or an unusable number is ``BadFieldError`` (naming the field, never its content),
which the decoders turn into a ``Malformed`` event or a skipped item.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import orjson

# Error messages go into alerts: long enough for a cause, short enough for a phone's notification.
MAX_ERROR_MESSAGE = 300

# Wire times are milliseconds since the epoch. Anything outside [1970, 9999] is not a time a
# server meant: datetime cannot format it, and arithmetic on it gives nonsense or overflows.
_MAX_MS = 253_402_300_799_999.0


class BadFieldError(Exception):
    """A required field is missing or has the wrong type; the message names the field only."""


def parse_json(data: str | bytes) -> object:
    """``json.loads`` for peer data; raises ``ValueError`` for anything it cannot safely return.

    The stdlib parser raises ``RecursionError`` on deep nesting (100 000 ``[``) and accepts
    ``NaN``/``Infinity``, which are not JSON; both become ``ValueError`` here.
    """
    if isinstance(data, bytes):
        data = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does
    try:
        return _DECODER.decode(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# One decoder for every event: json.loads with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_event(data: str) -> object:
    """``parse_json`` for a stream event, faster: orjson first (a third of json's time), json for
    whatever orjson refuses (a lone surrogate from an emoji split between two deltas, an integer
    beyond 64 bits, nesting over 1 024), so what is JSON reads as json reads it. Where orjson
    differs on a valid document, it reads a huge integer as a float: no field the decoders read
    tells them apart (both are no usable time or count)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return parse_json(data)


# Counts beyond this are no token counts (a float cannot even hold them exactly).
_MAX_COUNT = 2**53
# Costs beyond this (in the provider's currency unit) are no costs.
_MAX_AMOUNT = 1e12


def count(value: object) -> int:
    """A non-negative integer count from the wire; 0 for anything else (never raises)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    try:
        number = int(value)
    except (OverflowError, ValueError):
        return 0
    return number if 0 <= number <= _MAX_COUNT else 0


def amount(value: object) -> float | None:
    """A non-negative finite amount (a cost) from the wire; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and 0.0 <= number <= _MAX_AMOUNT else None


def wire_ms(value: object) -> float | None:
    """A wire time in milliseconds since the epoch, or None when unusable.

    Unusable: not a number, a bool, NaN, infinite, negative, beyond year 9999, or an integer too
    large for a float (a 400-digit ``created``).
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        ms = float(value)
    except OverflowError:
        return None
    if not math.isfinite(ms) or not 0.0 <= ms <= _MAX_MS:
        return None
    return ms


def error_of(error: object) -> tuple[str | None, str | None]:
    """An OpenCode error ``{name, data: {message}}`` as (name, cut message); (None, None) if absent."""
    if not isinstance(error, dict):
        return None, None
    name = error.get("name")
    data = error.get("data")
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str) and message:
        message = message.strip()
        if len(message) > MAX_ERROR_MESSAGE:
            message = message[: MAX_ERROR_MESSAGE - 1] + "…"
    else:
        message = None
    return (name if isinstance(name, str) and name else "Unknown"), message


def field_obj(m: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = m.get(key)
    if not isinstance(value, dict):
        raise BadFieldError(f"{key} is not an object")
    return value


def field_str(m: Mapping[str, Any], key: str) -> str:
    value = m.get(key)
    if not isinstance(value, str) or not value:
        raise BadFieldError(f"{key} is not a non-empty string")
    return value


def opt_str(m: Mapping[str, Any], key: str) -> str | None:
    value = m.get(key)
    return value if isinstance(value, str) and value else None


def field_ms(m: Mapping[str, Any], key: str) -> float:
    """A required wire time, in milliseconds since the epoch (checked: see ``wire_ms``)."""
    ms = wire_ms(m.get(key))
    if ms is None:
        raise BadFieldError(f"time.{key} is not a usable time")
    return ms
