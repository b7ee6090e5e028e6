"""Maps OpenCode 2's event stream (`GET /api/event` of `opencode2`, 2.0.x) to the tracker's events.

Built from the upstream source (anomalyco/opencode: ``packages/schema/src/session-event.ts``,
``permission.ts``, ``form.ts``, ``packages/server/src/handlers/event.ts``), from published
descriptions of real 2.0.12 and 2.0.19 streams, and checked against real 2.0.16 recordings
(``tests/fixtures/opencode2/amx-2.0.16``); README "OpenCode 2" says what was never seen.

Every line is ``{"id", "created"?, "type", "location": {"directory"}?, "data": {...},
"durable"?}``; the first is ``server.connected``; the keep-alive is an SSE comment
(``: heartbeat`` every 15 s), which the splitter hands over as an empty data string.

One prompt, as 2.0 sends it::

    session.inbox.enqueued {inboxID, item: {type: user, delivery: steer|queue}}   accepted
    session.execution.started                                                     the loop runs
    session.inbox.delivered {inboxID}                                             the loop took it
    session.step.started {assistantMessageID, agent, model}                       a reply opens
    session.{reasoning,text,tool.input}.{started,delta,ended}                     output
    session.tool.called / progress / success / failed                             tools
    session.step.ended {finish, cost, tokens}  |  session.step.failed {error}     a step ends
    session.execution.succeeded | failed {error} | interrupted {reason}           the loop stops

OpenCode 2 says which prompt a reply answers only through the order of these events: a step
answers the last user input delivered to its session. This decoder keeps that little state per
session (bounded), so that a step opens as ``ReplyOpened(parent_id=<that inbox id>)``, the same
event the 1.x decoder makes from ``parentID``. It also decides when the loop really stopped: an
execution ends with inputs still enqueued when another one follows at once for them (a queued
prompt), so that end is no idle; an interrupt for ``shutdown`` or ``superseded`` hands the work
to the next execution, except after a refusal (a permission answered "reject", a form cancelled)
and a step failed "aborted": real 2.0.16 streams end such a turn so, and nothing follows, so the
loop stopped. No tracker rule changes for OpenCode 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from watchdog.core.events import (
    Event,
    Heartbeat,
    HumanAnswered,
    HumanAsked,
    Ignored,
    Malformed,
    PartKind,
    PromptAdmitted,
    ReplyActivity,
    ReplyFinished,
    ReplyOpened,
    SessionDeleted,
    SessionFailed,
    SessionRun,
    SessionSeen,
    StatusChanged,
    StreamConnected,
    ToolProgress,
)
from watchdog.core.server import Line
from watchdog.core.tracker import ABORTED_ERROR
from watchdog.opencode.ids import event_time
from watchdog.opencode.v1 import PROBE_TITLE, decode_status, tokens_of
from watchdog.opencode.wire import (
    MAX_ERROR_MESSAGE,
    BadFieldError,
    amount,
    field_obj,
    field_str,
    opt_str,
    parse_event,
    wire_ms,
)

API = "v2"
EVENT_PATH = "/api/event"
# The splitter's stand-in for a comment-only SSE block (the 15 s `: heartbeat`).
HEARTBEAT_TYPE = "heartbeat"
# How OpenCode 2 names an interrupted step or tool (`error.type`); it becomes the name the
# tracker knows an abort by (the 1.x `MessageAbortedError`): an abort is no failure.
ABORTED_TYPE = "aborted"
# Sessions whose delivery order is remembered; beyond it the least recently seen is forgotten
# (its next step then answers nobody we know of, as after a reconnect).
MAX_SESSIONS = 10_000
# Inputs remembered per session (enqueued and not yet delivered, or not a user's).
MAX_INPUTS = 256
# Retry attempts beyond this are not counts.
_MAX_ATTEMPT = 1_000_000

# Output: the model said something (a first response).
_CONTENT = frozenset(
    {
        "session.text.started",
        "session.text.delta",
        "session.text.ended",
        "session.reasoning.started",
        "session.reasoning.delta",
        "session.reasoning.ended",
        "session.tool.input.started",
        "session.tool.input.delta",
        "session.tool.input.ended",
    }
)
_TOOL_RUNNING = frozenset({"session.tool.called", "session.tool.progress"})
_TOOL_DONE = frozenset({"session.tool.success", "session.tool.failed"})
# Part of the protocol, of no use to the tracker (usage comes with each step's end).
KNOWN_IGNORED = frozenset(
    {
        "session.agent.selected",
        "session.model.selected",
        "session.moved",
        "session.renamed",
        "session.forked",
        "session.viewed",
        "session.usage.updated",
        "session.usage.recorded",
        "session.input.promoted",
        "session.instructions.updated",
        "session.synthetic",
        "session.skill.activated",
        "session.shell.started",
        "session.shell.ended",
        "session.inbox.delivery.changed",
        "session.compaction.admitted",
        "session.compaction.started",
        "session.compaction.delta",
        "session.compaction.ended",
        "session.compaction.failed",
        "session.revert.staged",
        "session.revert.cleared",
        "session.revert.committed",
        "global.disposed",
    }
)
_KNOWN_PREFIXES = (
    "session.next.",
    "shell.",
    "pty.",
    "mcp.",
    "plugin.",
    "installation.",
    "project.",
    "worktree.",
    "vcs.",
    "config.",
    "filesystem.",
    "catalog.",
    "lsp.",
    "command.",
    "agent.",
    "reference.",
    "integration.",
)


@dataclass(slots=True)
class _Session:
    """What the order of a session's events says: which input its steps answer."""

    current: str | None = None  # the last user input delivered: the one its steps answer
    enqueued: dict[str, None] = field(default_factory=dict)  # user inputs not yet delivered
    other: dict[str, None] = field(default_factory=dict)  # inputs that are not a user's
    running: bool = False  # between execution.started and its end
    step_failed: bool = False  # a step of the running execution failed (its error was told)
    refused: bool = False  # a person rejected a permission or dismissed a form in this execution


class V2Stream:
    """OpenCode 2's `/api/event` as a wire format."""

    api = API

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def decode(self, data: str, wall: float) -> Line | None:
        """One line (``""`` is a heartbeat comment); never raises."""
        if not data:
            return _HEARTBEAT
        try:
            obj = parse_event(data)
        except ValueError:
            return Line("?", Malformed(type="?", reason="invalid JSON"))
        if not isinstance(obj, dict):
            return Line("?", Malformed(type="?", reason="not a JSON object"))
        etype = obj.get("type")
        if not isinstance(etype, str) or not etype:
            return Line("?", Malformed(type="?", reason="missing type"))
        payload = obj.get("data", {})
        if not isinstance(payload, dict):
            return Line(etype, Malformed(type=etype, reason="data is not an object"))
        try:
            event = self._decode(etype, payload, obj)
        except BadFieldError as exc:
            event = Malformed(type=etype, reason=str(exc))
        except Exception:  # last resort: a decoder bug must cost one event, never the stream
            event = Malformed(type=etype, reason="undecodable")
        sent = None
        if isinstance(event, StreamConnected):
            eid = obj.get("id")
            sent = event_time(eid if isinstance(eid, str) else None, wall)
        return Line(etype, event, sent)

    # -- per type -----------------------------------------------------------------------------

    def _decode(self, etype: str, d: Mapping[str, Any], env: Mapping[str, Any]) -> Event:
        if etype in _CONTENT:
            return ReplyActivity(
                field_str(d, "sessionID"), field_str(d, "assistantMessageID"), PartKind.CONTENT
            )
        if etype in _TOOL_RUNNING or etype in _TOOL_DONE:
            return ToolProgress(
                session_id=field_str(d, "sessionID"),
                message_id=field_str(d, "assistantMessageID"),
                # 2.0.19 sends `id`; the schema on main names it `callID`.
                call_id=opt_str(d, "callID") or field_str(d, "id"),
                running=etype in _TOOL_RUNNING,
            )
        match etype:
            case "server.connected":
                return StreamConnected()
            case "session.inbox.enqueued":
                return self._enqueued(d, env, "inboxID", d.get("item"))
            case "session.input.admitted":  # the schema on main renames the inbox
                return self._enqueued(d, env, "inputID", d.get("input"))
            case "session.inbox.delivered":
                return self._delivered(field_str(d, "sessionID"), field_str(d, "inboxID"), etype)
            case "session.input.promoted":
                return self._delivered(field_str(d, "sessionID"), field_str(d, "inputID"), etype)
            case "session.inbox.cancelled":
                return self._cancelled(field_str(d, "sessionID"), field_str(d, "inboxID"), etype)
            case "session.execution.started":
                sid = field_str(d, "sessionID")
                state = self._state(sid)
                state.running, state.step_failed, state.refused = True, False, False
                return StatusChanged(sid, SessionRun.BUSY)
            case "session.execution.succeeded":
                return self._stopped(field_str(d, "sessionID"), etype)
            case "session.execution.failed":
                sid = field_str(d, "sessionID")
                state = self._state(sid)
                if state.step_failed:
                    return self._stopped(sid, etype)  # the failing step already told its error
                state.running = False
                name, message = structured_error(d.get("error"))
                return SessionFailed(sid, name, message)
            case "session.execution.interrupted":
                return self._interrupted(d, etype)
            case "session.step.started":
                sid = field_str(d, "sessionID")
                model = d.get("model")
                model = model if isinstance(model, dict) else {}
                return ReplyOpened(
                    session_id=sid,
                    message_id=field_str(d, "assistantMessageID"),
                    parent_id=self._state(sid).current or "",
                    provider=opt_str(model, "providerID"),
                    model=opt_str(model, "id"),
                )
            case "session.step.streamed":
                return ReplyActivity(
                    field_str(d, "sessionID"), field_str(d, "assistantMessageID"), PartKind.STEP
                )
            case "session.step.ended" | "session.step.failed":
                return self._step_end(etype, d)
            case "session.retry.scheduled":
                _, message = structured_error(d.get("error"))
                attempt = d.get("attempt")
                at = wire_ms(d.get("at"))
                usable = (
                    isinstance(attempt, int)
                    and not isinstance(attempt, bool)
                    and 0 <= attempt <= _MAX_ATTEMPT
                )
                return StatusChanged(
                    session_id=field_str(d, "sessionID"),
                    run=SessionRun.RETRY,
                    attempt=attempt if usable else None,
                    retry_message=message,
                    next_retry_at=None if at is None else at / 1000.0,
                )
            case "session.status":
                status = field_obj(d, "status")
                if status.get("type") == "waiting":  # a person is asked: permission/form say who
                    return Ignored(type=etype, known=True)
                return decode_status(field_str(d, "sessionID"), status)
            case "session.idle":
                return StatusChanged(field_str(d, "sessionID"), SessionRun.IDLE)
            case "session.created":
                location = d.get("location")
                directory = opt_str(location, "directory") if isinstance(location, dict) else None
                return SessionSeen(
                    session_id=field_str(d, "sessionID"),
                    parent_session_id=opt_str(d, "parentID"),
                    directory=directory or _directory(env),
                    probe=opt_str(d, "title") == PROBE_TITLE,
                )
            case "session.deleted":
                sid = field_str(d, "sessionID")
                self._sessions.pop(sid, None)
                return SessionDeleted(sid)
            case "permission.asked" | "permission.v2.asked" | "question.asked":
                return HumanAsked(field_str(d, "sessionID"), field_str(d, "id"))
            case "permission.replied" | "permission.v2.replied" | "question.replied":
                return self._answered(
                    field_str(d, "sessionID"),
                    field_str(d, "requestID"),
                    rejected=d.get("reply") == "reject",
                )
            case "question.rejected":
                return self._answered(
                    field_str(d, "sessionID"), field_str(d, "requestID"), rejected=True
                )
            case "form.created":
                form = field_obj(d, "form")
                return HumanAsked(field_str(form, "sessionID"), field_str(form, "id"))
            case "form.replied" | "form.cancelled":
                return self._answered(
                    field_str(d, "sessionID"),
                    field_str(d, "id"),
                    rejected=etype == "form.cancelled",
                )
            case _:
                known = etype in KNOWN_IGNORED or etype.startswith(_KNOWN_PREFIXES)
                return Ignored(type=etype, known=known)

    def _enqueued(
        self, d: Mapping[str, Any], env: Mapping[str, Any], id_key: str, item: object
    ) -> Event:
        sid = field_str(d, "sessionID")
        input_id = field_str(d, id_key)
        state = self._state(sid)
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in (None, "user"):
            # A synthetic input (a restart's "continue"), a compaction or a move: no one's prompt.
            _remember(state.other, input_id)
            return Ignored(type=str(env.get("type")), known=True)
        _remember(state.enqueued, input_id)
        created = wire_ms(env.get("created"))
        return PromptAdmitted(
            session_id=sid,
            message_id=input_id,
            created_at=None if created is None else created / 1000.0,
            directory=_directory(env),
        )

    def _delivered(self, sid: str, input_id: str, etype: str) -> Event:
        state = self._state(sid)
        state.enqueued.pop(input_id, None)
        if input_id not in state.other:
            state.current = input_id
        return Ignored(type=etype, known=True)

    def _cancelled(self, sid: str, input_id: str, etype: str) -> Event:
        state = self._state(sid)
        state.enqueued.pop(input_id, None)
        state.other.pop(input_id, None)
        if not state.running and not state.enqueued:
            # Nothing runs and nothing else waits: the cancelled prompt will never be answered.
            return StatusChanged(sid, SessionRun.IDLE)
        return Ignored(type=etype, known=True)

    def _answered(self, sid: str, request: str, *, rejected: bool) -> Event:
        if rejected:
            self._state(sid).refused = True
        return HumanAnswered(sid, request, rejected=rejected)

    def _stopped(self, sid: str, etype: str) -> Event:
        """An execution ended: the loop stopped, unless inputs wait that start the next one."""
        state = self._state(sid)
        state.running = False
        state.step_failed = False
        if state.enqueued:
            return Ignored(type=etype, known=True)
        return StatusChanged(sid, SessionRun.IDLE)

    def _interrupted(self, d: Mapping[str, Any], etype: str) -> Event:
        sid = field_str(d, "sessionID")
        reason = d.get("reason")
        state = self._state(sid)
        handed_on = reason in ("shutdown", "superseded")
        if state.step_failed and (state.refused or not handed_on):
            # The interrupted step already said "aborted". Real 2.0.16 streams end a turn whose
            # permission was rejected, or whose question form was dismissed, with reason
            # "shutdown" (the reason an interrupt that names none gets) and send nothing after
            # it: the loop stopped, unless inputs wait that start the next execution. A shutdown
            # with no refusal before it stays a hand-over (a server stopping: never seen).
            return self._stopped(sid, etype)
        if handed_on:
            # Nothing of the execution ended yet: the work goes on in the next one (a server
            # restart resumes it, a newer drain takes over), so nothing ended for the prompts.
            state.running = False
            return Ignored(type=etype, known=True)
        state.running = False
        return SessionFailed(sid, ABORTED_ERROR, "interrupted")

    def _step_end(self, etype: str, d: Mapping[str, Any]) -> Event:
        sid = field_str(d, "sessionID")
        mid = field_str(d, "assistantMessageID")
        state = self._state(sid)
        model_parent = state.current or ""
        tokens = tokens_of(d.get("tokens"))
        cost = amount(d.get("cost"))
        if etype == "session.step.ended":
            return ReplyFinished(
                session_id=sid,
                message_id=mid,
                parent_id=model_parent,
                finish=opt_str(d, "finish"),
                error=None,
                tokens=tokens,
                cost=cost,
            )
        state.step_failed = True
        name, message = structured_error(d.get("error"))
        return ReplyFinished(
            session_id=sid,
            message_id=mid,
            parent_id=model_parent,
            finish=None,
            error=name,
            error_message=message,
            tokens=tokens,
            cost=cost,
        )

    def _state(self, sid: str) -> _Session:
        sessions = self._sessions
        state = sessions.pop(sid, None)
        if state is None:
            state = _Session()
            if len(sessions) >= MAX_SESSIONS:
                del sessions[next(iter(sessions))]  # the least recently seen
        sessions[sid] = state  # most recently seen last
        return state


_HEARTBEAT = Line(HEARTBEAT_TYPE, Heartbeat())


def _remember(ids: dict[str, None], input_id: str) -> None:
    ids[input_id] = None
    while len(ids) > MAX_INPUTS:
        del ids[next(iter(ids))]


def _directory(env: Mapping[str, Any]) -> str | None:
    location = env.get("location")
    return opt_str(location, "directory") if isinstance(location, dict) else None


def structured_error(error: object) -> tuple[str, str | None]:
    """OpenCode 2's ``{type, message, status?}`` as (name, cut message); an abort has the name
    the tracker knows aborts by."""
    if not isinstance(error, dict):
        return "unknown", None
    etype = error.get("type")
    name = etype if isinstance(etype, str) and etype else "unknown"
    if name == ABORTED_TYPE:
        name = ABORTED_ERROR
    message = error.get("message")
    if isinstance(message, str) and message.strip():
        message = message.strip()
        if len(message) > MAX_ERROR_MESSAGE:
            message = message[: MAX_ERROR_MESSAGE - 1] + "…"
        return name[:80], message
    return name[:80], None
