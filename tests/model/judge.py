"""The reference judge: each prompt's verdict from the whole history of what really happened.

It is written differently from the tracker on purpose. The tracker reads OpenCode's events one
at a time and infers, for every prompt at once, when its turn began and what its reply did. The
judge is given the facts (when the loop picked each message up, what the reply did, how the
turn ended; see sim.py) and walks them once per prompt, keeping two stopwatches: the time its
turn has waited for a first answer, and the time its reply has been quiet, both stopped while a
person is asked. Slow and obvious is the point.

The rules are the README's ("What it reports"):
- A message whose turn has not begun ends ``no_reply`` when the next message arrives a second
  or more after it, when ``turn_start`` passes, when its session goes idle, or when a read of
  the session that is the newest word on it says idle a second or more after it arrived.
- A message stored while an earlier one of its session is in its turn (picked up, or stored
  into a running loop) waits queued, without a clock; its turn begins when the loop picks it up.
  One stored into a running loop with no other prompt in its turn is in its turn at once.
- From its turn's start: ``no_response`` after ``first_response`` without output; after output,
  ``inactive`` after ``inactivity`` of quiet (``tool`` while a tool runs). Each fires once,
  resolves at the next sign of life or the end. Time while a person is asked (in the session or
  its sub-agent) does not count.
- It ends as its turn ends (answered, failed, aborted; a reject is aborted), ``dropped`` if its
  session goes idle first, ``aborted`` if the session is deleted. A `session.error` ends every
  prompt in its turn.
- A messageID posted again after its prompt ended is a new prompt (duplicate-message-id): only
  what happens after it counts, so the old reply, read or repeated, answers nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.model.sim import Fact, Scenario
from watchdog.core.settings import Timeouts

NO_TURN_GAP = 1.0


@dataclass
class Verdict:
    """What should be said of one prompt: monotonic times throughout."""

    arrival: float
    session: str = ""
    outcome: str | None = None  # None: still pending at the end
    ended: float | None = None
    ended_key: tuple[float, float] = (float("inf"), float("inf"))  # (time, place among the facts)
    started_key: tuple[float, float] = (float("inf"), float("inf"))  # when its turn began
    first_response: float | None = None
    stalls: list[list[object]] = field(default_factory=list)  # [kind, fired at, resolved at]


def judge(scenario: Scenario, timeouts: Timeouts) -> dict[str, Verdict]:
    """Every prompt's verdict, by message id (``<id>#2`` for the second sending of an id)."""
    facts = scenario.facts
    verdicts: dict[str, Verdict] = {}
    # Prompts in order of arrival: whether a session has a prompt in its turn when the next
    # arrives depends only on earlier ones. A messageID is sent again only once its first
    # sending ended, so the facts after an arrival that name the id are that sending's.
    for index, fact in enumerate(facts):
        if fact.what == "arrive":
            key = sending(fact.messages[0], verdicts)
            verdicts[key] = _one(facts, index, scenario.end, timeouts, verdicts)
    return verdicts


def sending(message: str, known: dict[str, Verdict]) -> str:
    """The key of a new sending of ``message``: its id, then ``<id>#2``, ``<id>#3``..."""
    if message not in known:
        return message
    n = 2
    while f"{message}#{n}" in known:
        n += 1
    return f"{message}#{n}"


def _one(
    facts: list[Fact], index: int, end: float, timeouts: Timeouts, earlier: dict[str, Verdict]
) -> Verdict:
    arrive = facts[index]
    session, message, a = arrive.session, arrive.messages[0], arrive.t
    verdict = Verdict(arrival=a, session=session)
    children = {f.session for f in facts if f.what == "child" and f.parent == session}
    watched = {session} | children  # a sub-agent's person blocks the parent too

    # What the session was doing when it arrived.
    loop = False
    asks: dict[str, str] = {}  # request -> the session that asked it
    for f in facts[:index]:
        if f.session in watched:
            _track_asks(f, asks, session)
        if f.session == session and f.what in ("pickup", "idle", "delete"):
            loop = f.what == "pickup"
    here = (a, float(index))
    in_turn = [
        v for m, v in earlier.items() if v.session == session and v.started_key < here < v.ended_key
    ]
    if in_turn:
        mode = "queued"
    elif loop:
        mode = "waiting"  # stored into a running loop: its turn is on
        verdict.started_key = here
    else:
        mode = "awaiting"
    waited = 0.0  # first-response stopwatch
    quiet = 0.0  # inactivity stopwatch
    tools = 0
    firing: list[object] | None = None
    fired: set[str] = set()
    t = a
    place = float(index)  # where among the facts the walk is

    def finish(at: float, outcome: str, key: float | None = None) -> None:
        nonlocal firing
        if firing is not None:
            firing[2] = at
            firing = None
        verdict.outcome, verdict.ended = outcome, at
        verdict.ended_key = (at, place if key is None else key)

    def run_clock(until: float) -> bool:
        """Advance the stopwatches to ``until``; True if the prompt ended on the way."""
        nonlocal waited, quiet, firing, t
        blocked = bool(asks)
        if mode == "awaiting":
            due = a + timeouts.turn_start
            if due <= until:
                finish(due, "no_reply", key=place - 0.5)  # the tick comes before the next fact
                return True
        elif mode == "waiting" and not blocked and "no_response" not in fired:
            due = t + (timeouts.first_response - waited)
            if due <= until:
                firing = ["no_response", due, None]
                verdict.stalls.append(firing)
                fired.add("no_response")
            waited += until - t
        elif mode == "replying" and not blocked and "inactive" not in fired:
            limit = timeouts.tool if tools else timeouts.inactivity
            due = t + (limit - quiet)
            if due <= until:
                firing = ["inactive", due, None]
                verdict.stalls.append(firing)
                fired.add("inactive")
            quiet += until - t
        t = until
        return False

    def sign_of_life(at: float, *, output: bool) -> None:
        nonlocal mode, quiet, firing
        if mode == "waiting" and output:
            verdict.first_response = at
            mode = "replying"
        elif mode != "replying":
            return
        quiet = 0.0
        if firing is not None:
            firing[2] = at
            firing = None

    for i, f in enumerate(facts[index + 1 :], start=index + 1):
        place = float(i)
        if run_clock(f.t):
            return verdict
        if f.session in watched:
            _track_asks(f, asks, session)
        if f.session != session:
            if f.session in children and f.what in _WORK:
                sign_of_life(f.t, output=False)  # a sub-agent at work is the parent's tool at work
            continue
        match f.what:
            case "arrive":
                if mode == "awaiting" and f.t - a >= NO_TURN_GAP:
                    finish(f.t, "no_reply")
                    return verdict
            case "pickup" if message in f.messages and mode in ("awaiting", "queued"):
                mode, waited = "waiting", 0.0
                verdict.started_key = (f.t, place)
            case "output" | "tool_start" | "tool_end" if mode in ("waiting", "replying"):
                tools += {"tool_start": 1, "tool_end": -1}.get(f.what, 0)
                sign_of_life(f.t, output=True)
            case "step_end" if mode in ("waiting", "replying"):
                tools = 0
                sign_of_life(f.t, output=True)
            case "activity" if mode == "replying":
                sign_of_life(f.t, output=False)
            case "turn_end" if message in f.messages:
                outcome = {"rejected": "aborted"}.get(f.outcome or "", f.outcome or "?")
                if outcome == "answered" and mode == "waiting":
                    sign_of_life(f.t, output=True)
                finish(f.t, outcome)
                return verdict
            case "error" if mode in ("waiting", "replying"):
                # `session.error` ends the running turn: every prompt in its turn, those stored
                # into the running loop before its reply opened included.
                finish(f.t, f.outcome or "?")
                return verdict
            case "idle" if message in f.messages:
                finish(f.t, "no_reply" if mode == "awaiting" else "dropped")
                return verdict
            case "delete":
                finish(f.t, "aborted")
                return verdict
            case "snapshot_idle" if mode == "awaiting":
                if f.taken is not None and a <= f.taken - NO_TURN_GAP:
                    finish(f.t, "no_reply")
                    return verdict
            case _:
                pass
    place = float("inf")
    run_clock(end)
    return verdict


# What a sub-agent does that is work of its parent's running `task` tool.
_WORK = frozenset({"output", "activity", "tool_start", "tool_end", "step_end", "turn_end"})


def _track_asks(f: Fact, asks: dict[str, str], session: str) -> None:
    """The requests that block ``session``: asked in it or its sub-agent, until answered or moot."""
    if f.what == "ask" and f.request:
        asks[f.request] = f.session
    elif f.what == "answer" and f.request:
        asks.pop(f.request, None)
    elif f.what in ("idle", "delete"):
        if f.session == session:
            asks.clear()  # its loop stopped: nobody is asked any more
        else:
            for request in [r for r, s in asks.items() if s == f.session]:
                del asks[request]  # the sub-agent stopped: its questions are moot
