"""The decoder's shortcuts (sync duplicates by prefix, deltas without the general dispatch) give
the same answers as decoding everything in full."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES
from tests.test_fuzz import JSON_VALUES, mutate
from watchdog.core.events import Malformed, PartKind, ReplyActivity
from watchdog.opencode.v1 import Decoded, V1Stream, decode_event, decode_line, decode_typed
from watchdog.opencode.wire import parse_json

GLOBAL_LINES = [
    line[6:]
    for path in sorted(FIXTURES.glob("*/*.global-event.sse"))
    for line in path.read_text(encoding="utf-8").splitlines()
    if line.startswith("data: ")
]
SCOPED_LINES = [
    line[6:]
    for path in sorted(FIXTURES.glob("*/*.event.sse"))
    for line in path.read_text(encoding="utf-8").splitlines()
    if line.startswith("data: ")
]


def in_full(data: str, *, directory_scoped: bool) -> Decoded | None:
    """Parse all of it (as peer data: NaN, Infinity and deep nesting are not JSON), then the
    general decoder: what decode_line did before the shortcuts."""
    try:
        obj = parse_json(data)
    except ValueError:
        return Decoded(Malformed(type="?", reason="invalid JSON"), "?")
    if not isinstance(obj, dict):
        return Decoded(Malformed(type="?", reason="not a JSON object"), "?")
    directory = None
    if not directory_scoped:
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            return Decoded(Malformed(type="?", reason="global event without payload object"), "?")
        raw_dir = obj.get("directory")
        directory = raw_dir if isinstance(raw_dir, str) else None
        if payload.get("type") == "sync":
            return None
        obj = payload
    etype, eid = obj.get("type"), obj.get("id")
    return Decoded(
        decode_event(obj, directory=directory),
        etype if isinstance(etype, str) else "?",
        eid if isinstance(eid, str) else None,
        directory,
    )


def test_every_captured_line_decodes_as_in_full() -> None:
    """Both streams of every reference capture, deltas and sync duplicates included."""
    assert any('"type":"sync"' in d for d in GLOBAL_LINES)
    assert any('"message.part.delta"' in d for d in GLOBAL_LINES)
    for lines, scoped in ((GLOBAL_LINES, False), (SCOPED_LINES, True)):
        for data in lines:
            full = in_full(data, directory_scoped=scoped)
            assert decode_line(data, directory_scoped=scoped) == full
            typed = decode_typed(data, directory_scoped=scoped)
            assert typed == (None if full is None else (full.type, full.event))


@settings(max_examples=500, deadline=None)
@given(
    line=st.sampled_from(GLOBAL_LINES),
    path=st.lists(st.integers(0, 50), min_size=1, max_size=5),
    value=JSON_VALUES,
    delete=st.booleans(),
    cut=st.integers(0, 2000),
    how=st.sampled_from(["mutate", "cut", "both"]),
)
def test_damaged_lines_decode_as_in_full(
    line: str, path: list[int], value: Any, delete: bool, cut: int, how: str
) -> None:
    """Mutated and cut lines: the same result, except that a line cut after its sync prefix is
    skipped as a duplicate rather than counted as invalid JSON."""
    data = line
    if how in ("mutate", "both"):
        data = json.dumps(mutate(json.loads(data), path, value, delete), separators=(",", ":"))
    if how in ("cut", "both"):
        data = data[:cut]
    got = decode_line(data, directory_scoped=False)
    full = in_full(data, directory_scoped=False)
    assert decode_typed(data, directory_scoped=False) == (got and (got.type, got.event))
    if got is None and full is not None:
        assert isinstance(full.event, Malformed)
        assert full.event.reason == "invalid JSON"
        assert '"payload":{"type":"sync"' in data
    else:
        assert got == full


def test_a_sync_look_alike_deeper_in_the_event_is_not_skipped() -> None:
    """Only the wrapper's own payload counts: a nested one, or one after an object, is decoded."""
    nested = (
        '{"directory":"/p","project":"g","payload":{"id":"evt_1","type":"session.status",'
        '"properties":{"sessionID":"ses_1","status":{"type":"busy"},'
        '"x":{"payload":{"type":"sync"}}}}}'
    )
    after_object = '{"meta":{"a":1},"payload":{"type":"sync","x":1},"directory":"/p"}'
    assert decode_line(nested, directory_scoped=False) == in_full(nested, directory_scoped=False)
    assert decode_line(nested, directory_scoped=False) is not None
    assert decode_line(after_object, directory_scoped=False) is None  # a real sync, in full


def test_a_sync_duplicate_is_skipped_by_its_prefix() -> None:
    """The rest of a sync line is not parsed: even a broken one is skipped, not counted."""
    broken = '{"directory":"/p","project":"g","payload":{"type":"sync","syncEvent":{"id":'
    assert decode_line(broken, directory_scoped=False) is None
    assert decode_line(broken, directory_scoped=True) is not None  # /event has no sync wrapper


def test_a_delta_orjson_refuses_still_counts_as_activity() -> None:
    """Half an emoji (a lone surrogate escape) in a delta: json reads it, so it is still activity."""
    data = (
        '{"directory":"/p","project":"g","payload":{"id":"evt_1","type":"message.part.delta",'
        '"properties":{"sessionID":"ses_1","messageID":"msg_1","partID":"prt_1","field":"text",'
        '"delta":"\\ud83d"}}}'
    )
    decoded = decode_line(data, directory_scoped=False)
    assert decoded == in_full(data, directory_scoped=False)
    assert decoded is not None
    assert decoded.event == ReplyActivity("ses_1", "msg_1", PartKind.CONTENT)


def _shuffled(value: Any, rnd: Any) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {k: _shuffled(value[k], rnd) for k in keys}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@settings(max_examples=500, deadline=None)
@given(
    line=st.sampled_from(GLOBAL_LINES),
    rnd=st.randoms(use_true_random=False),
    escape_ids=st.booleans(),
    ascii_only=st.booleans(),
    text=st.text(max_size=20),
)
def test_generated_variants_decode_as_in_full(
    line: str, rnd: Any, escape_ids: bool, ascii_only: bool, text: str
) -> None:
    """The live wire format's shortcuts (sync by prefix, deltas and the rest through orjson)
    against the full parse, on variants of every captured line: keys in another order, ids
    written with escapes, unicode in the delta text and the directory, \\u-escaped or not."""
    obj = json.loads(line)
    payload = obj.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("properties"), dict):
        props = payload["properties"]
        if "delta" in props:
            props["delta"] = text + str(props["delta"])
    if "directory" in obj:
        obj["directory"] = f"/home/{text}/proj"
    data = json.dumps(_shuffled(obj, rnd), separators=(",", ":"), ensure_ascii=ascii_only)
    if escape_ids:
        for prefix in ("ses_", "msg_", "evt_"):
            data = data.replace(f'"{prefix}', f'"\\u00{ord(prefix[0]):02x}{prefix[1:]}')
    full = in_full(data, directory_scoped=False)
    got = V1Stream(directory_scoped=False).decode(data, 1_795_596_579.0)
    assert (got and (got.type, got.event)) == (full and (full.type, full.event))
    assert decode_line(data, directory_scoped=False) == full
