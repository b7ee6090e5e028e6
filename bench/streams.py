"""Synthetic `/global/event` streams shaped like the reference captures (tests/fixtures/opencode/1.18.33).

Every line copies the structure of a captured event; only ids, times and delta text vary. The mix
of the ingest stream follows a busy real server: 83 % `message.part.delta` of about 325 bytes,
about 7 % `sync` duplicates, and the rest part updates, `session.status` busy and heartbeats.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

DIRECTORY = "/srv/opencode-capture/proj/1.18.33"
WORDS = [
    "the",
    "of",
    "to",
    "and",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "I",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
]


def _id(prefix: str, n: int) -> str:
    # OpenCode ids: prefix, 12 hex digits of time and counter, 14 random letters (30 characters).
    return f"{prefix}_{n:012x}{'x' * 14}"


def sid(n: int) -> str:
    return _id("ses", n)


def mid(n: int) -> str:
    return _id("msg", n)


class Ids:
    """Fresh event ids."""

    def __init__(self, start: int = 1) -> None:
        self.n = start

    def next(self) -> str:
        self.n += 1
        return _id("evt", self.n)


def line(payload: dict[str, Any], *, directory: str | None = DIRECTORY) -> bytes:
    body: dict[str, Any] = {"directory": directory, "project": "global"} if directory else {}
    body["payload"] = payload
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def heartbeat(ids: Ids) -> bytes:
    return line({"id": ids.next(), "type": "server.heartbeat", "properties": {}}, directory=None)


def session_updated(ids: Ids, session: str, ms: int) -> bytes:
    info = {
        "id": session,
        "slug": "silent-knight",
        "projectID": "global",
        "directory": DIRECTORY,
        "path": "tmp/capture/proj/1.18.33",
        "title": "New session - 2026-11-25T08:49:39.490Z",
        "version": "1.18.33",
        "cost": 0,
        "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
        "time": {"created": ms, "updated": ms},
    }
    props = {"sessionID": session, "info": info}
    return line({"id": ids.next(), "type": "session.updated", "properties": props})


def user_message(ids: Ids, session: str, message: str, ms: int) -> bytes:
    info = {
        "id": message,
        "role": "user",
        "sessionID": session,
        "time": {"created": ms},
        "agent": "build",
        "model": {"providerID": "fake", "modelID": "fake-1"},
    }
    props = {"sessionID": session, "info": info}
    return line({"id": ids.next(), "type": "message.updated", "properties": props})


def assistant_message(
    ids: Ids, session: str, message: str, parent: str, ms: int, *, finish: str | None = None
) -> bytes:
    time: dict[str, int] = {"created": ms}
    info: dict[str, Any] = {
        "id": message,
        "parentID": parent,
        "role": "assistant",
        "mode": "build",
        "agent": "build",
        "path": {"cwd": DIRECTORY, "root": "/"},
        "cost": 0,
        "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
        "modelID": "fake-1",
        "providerID": "fake",
        "time": time,
        "sessionID": session,
    }
    if finish is not None:
        time["completed"] = ms
        info["finish"] = finish
    props = {"sessionID": session, "info": info}
    return line({"id": ids.next(), "type": "message.updated", "properties": props})


def busy(ids: Ids, session: str) -> bytes:
    props = {"sessionID": session, "status": {"type": "busy"}}
    return line({"id": ids.next(), "type": "session.status", "properties": props})


def text_part(ids: Ids, session: str, message: str, part: str, text: str, ms: int) -> bytes:
    part_obj = {
        "id": part,
        "type": "text",
        "text": text,
        "messageID": message,
        "sessionID": session,
    }
    props = {"sessionID": session, "part": part_obj, "time": ms}
    return line({"id": ids.next(), "type": "message.part.updated", "properties": props})


def sync_part(
    ids: Ids, session: str, message: str, part: str, text: str, ms: int, seq: int
) -> bytes:
    eid = ids.next()
    part_obj = {
        "id": part,
        "type": "text",
        "text": text,
        "messageID": message,
        "sessionID": session,
    }
    sync = {
        "id": eid,
        "type": "message.part.updated.1",
        "seq": seq,
        "aggregateID": session,
        "data": {"sessionID": session, "part": part_obj, "time": ms},
    }
    return line({"type": "sync", "syncEvent": sync, "id": eid})


def delta(ids: Ids, session: str, message: str, part: str, text: str) -> bytes:
    props = {
        "sessionID": session,
        "messageID": message,
        "partID": part,
        "field": "text",
        "delta": text,
    }
    return line({"id": ids.next(), "type": "message.part.delta", "properties": props})


def _words(rng: random.Random, length: int) -> str:
    out: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:length]


@dataclass(frozen=True)
class Mix:
    """What a stream is made of, counted on its data lines."""

    events: int  # lines that are not sync duplicates (what the daemon counts)
    lines: int
    deltas: int
    syncs: int
    bytes: int
    mean_delta_bytes: float


def busy_reply_stream(
    n_lines: int, *, sessions: int = 20, seed: int = 1, start_ms: int = 1_795_596_579_000
) -> tuple[list[bytes], Mix]:
    """A server streaming replies in ``sessions`` sessions at once: the ingest workload.

    Each session gets a prompt and an open reply first; then lines follow the mix: 83 % deltas,
    7 % sync duplicates, 5 % text part updates, 4 % `session.status` busy, 1 % heartbeats.
    """
    rng = random.Random(seed)
    ids = Ids()
    out: list[bytes] = []  # bench.server greets with server.connected; a second one would reconnect
    replies = []
    for s in range(sessions):
        session, prompt, reply = sid(s), mid(2 * s), mid(2 * s + 1)
        part = _id("prt", s)
        out += [
            session_updated(ids, session, start_ms),
            user_message(ids, session, prompt, start_ms),
            busy(ids, session),
            assistant_message(ids, session, reply, prompt, start_ms),
        ]
        replies.append((session, reply, part))
    seq = 0
    while len(out) < n_lines:
        session, reply, part = replies[rng.randrange(sessions)]
        roll = rng.random()
        if roll < 0.83:
            # A delta line of ~325 bytes, like the captured ones: a token or two of text.
            out.append(delta(ids, session, reply, part, _words(rng, rng.randint(1, 9))))
        elif roll < 0.90:
            seq += 1
            out.append(sync_part(ids, session, reply, part, _words(rng, 40), start_ms, seq))
        elif roll < 0.95:
            out.append(text_part(ids, session, reply, part, _words(rng, 40), start_ms))
        elif roll < 0.99:
            out.append(busy(ids, session))
        else:
            out.append(heartbeat(ids))
    return out, mix_of(out)


def mix_of(lines: list[bytes]) -> Mix:
    deltas = [x for x in lines if b'"type":"message.part.delta"' in x]
    syncs = sum(1 for x in lines if b'"payload":{"type":"sync"' in x)
    return Mix(
        events=len(lines) - syncs,
        lines=len(lines),
        deltas=len(deltas),
        syncs=syncs,
        bytes=sum(map(len, lines)),
        mean_delta_bytes=sum(map(len, deltas)) / max(1, len(deltas)) - 2,  # without the blank line
    )
