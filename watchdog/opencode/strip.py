"""Empties what people wrote, and what the model said, out of recorded OpenCode events (1.x and 2)."""

from __future__ import annotations

from typing import Any

from watchdog.opencode.v1 import PROBE_TITLE

# Keys under which OpenCode 1.x carries what people wrote or what the model said, or what is made
# from it: message and part text, streamed deltas, session titles (written from the first prompt),
# tool input and output, diffs, todos, questions and permission patterns. None of them is read by
# the decoder above except for its presence (a user message's `summary`), so a recording keeps
# each key and empties its value: the recording then decodes to exactly the same events.
TEXT_KEYS = frozenset(
    {
        "text",
        "delta",
        "title",
        "input",
        "output",
        "raw",
        "metadata",
        "diff",
        "diffs",
        "summary",
        "todos",
        "questions",
        "answers",
        "patterns",
        "prompt",
        "description",
        "content",
        "body",
        "system",
        "snapshot",
        "attachments",
        # OpenCode 2: a permission's resources (a shell command, say) and the patterns to save, a
        # form's fields and its answer, a shell's command.
        "resources",
        "save",
        "fields",
        "answer",
        "command",
    }
)
MAX_STRIP_DEPTH = 64  # deeper nesting is not OpenCode's; it is cut off rather than walked


def strip_text(value: Any, *, _depth: int = 0) -> Any:
    """A copy of an event object with the values of ``TEXT_KEYS`` emptied, at any depth."""
    if _depth > MAX_STRIP_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            key: _emptied(item)
            if key in TEXT_KEYS and not (key == "title" and item == PROBE_TITLE)
            else strip_text(item, _depth=_depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [strip_text(item, _depth=_depth + 1) for item in value]
    return value


def _emptied(value: Any) -> Any:
    if isinstance(value, str):
        return ""
    if isinstance(value, dict):
        return {}
    if isinstance(value, list):
        return []
    return value
