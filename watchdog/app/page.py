"""The status page at `/`: one server-rendered HTML page that refreshes itself, readable on a phone.

It shows ids, states, times, directories and model names, never prompt or reply text (the
tracker holds none) nor credentials (the page is never given any). Every value is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from watchdog.app.views import model_name, session_words
from watchdog.core.tracker import PendingPrompt, SessionView
from watchdog.sinks.recent import Incident

REFRESH_SECONDS = 10
MAX_INCIDENTS = 20
MAX_PENDING = 200  # a page, not a dump: /status has them all
MAX_SESSIONS = 50  # over all servers, most recent first


@dataclass(frozen=True, slots=True)
class ServerView:
    """What the page shows about one watched server."""

    name: str
    url: str
    state: str
    since: float | None
    last_event_at: float | None
    last_error: str | None
    reconnects: int
    pending: Sequence[PendingPrompt]
    sessions: Sequence[SessionView] = ()  # most recent first
    api: str | None = None  # "v1" (/global/event) or "v2" (OpenCode 2, /api/event); None: not yet


@dataclass(frozen=True, slots=True)
class PageView:
    """Everything one rendering needs; built by the daemon at request time."""

    version: str
    now: float
    servers: Sequence[ServerView]
    incidents: Sequence[Incident]  # newest first
    # Issue 11's probes plug in here: one mapping per probe result, rendered column by column in
    # the given key order. None (no probes configured) leaves the section out.
    probes: Sequence[Mapping[str, object]] | None = None


def e(value: object) -> str:
    """HTML-escaped text of any value; None is a dash."""
    return "-" if value is None or value == "" else html.escape(str(value), quote=True)


def age(seconds: float | None) -> str:
    """A short duration for people: 4.2 s, 3 min 05 s, 2 h 10 min."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def clock(ts: float | None) -> str:
    """UTC wall time, to the second."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _cell(label: str, value: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<td data-label="{e(label)}"{klass}>{value}</td>'


def _table(cls: str, headers: Sequence[str], rows: Sequence[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _servers(view: PageView) -> str:
    cards = []
    for s in view.servers:
        since = f"since {clock(s.since)}" if s.since is not None else ""
        last = f"{age(view.now - s.last_event_at)} ago" if s.last_event_at is not None else "never"
        error = f'<p class="error">{e(s.last_error)}</p>' if s.last_error else ""
        cards.append(
            f'<div class="server" data-server="{e(s.name)}" data-state="{e(s.state)}">'
            f'<h3>{e(s.name)} <span class="badge {e(s.state)}">{e(s.state)}</span></h3>'
            f'<p class="url">{e(s.url)}</p>'
            f'<p class="api">API {e(s.api or "not yet known")}</p>'
            f"<p>stream {e(s.state)} {e(since)} · last event {e(last)} · "
            f"{s.reconnects} reconnect(s) · {len(s.pending)} pending</p>{error}</div>"
        )
    return "".join(cards) or '<p class="empty">no server configured</p>'


def _pending(view: PageView) -> str:
    prompts = [p for s in view.servers for p in s.pending]
    prompts.sort(key=lambda p: p.ref.accepted_at)
    rows = []
    for p in prompts[:MAX_PENDING]:
        ref = p.ref
        model = model_name(ref.provider, ref.model)
        rows.append(
            f'<tr class="prompt" data-state="{e(p.state.value)}">'
            + _cell("state", f'<span class="badge {e(p.state.value)}">{e(p.state.value)}</span>')
            + _cell("age", e(age(p.age)))
            + _cell("server", e(ref.server))
            + _cell("session", e(ref.session_id), "id")
            + _cell("message", e(ref.message_id), "id")
            + _cell("directory", e(ref.directory), "path")
            + _cell("model", e(model), "nowrap")
            + "</tr>"
        )
    more = (
        f'<p class="empty">and {len(prompts) - MAX_PENDING} more in /status</p>'
        if len(prompts) > MAX_PENDING
        else ""
    )
    headers = ("state", "age", "server", "session", "message", "directory", "model")
    return _table("pending", headers, rows, "No prompt is pending.") + more


def _incidents(view: PageView) -> str:
    rows = []
    for item in view.incidents[:MAX_INCIDENTS]:
        if item.outcome:
            now = f"ended {item.outcome}"
        elif item.resolved_at is not None:
            now = "resolved"
        else:
            now = "firing"
        # A prompt that failed before OpenCode stored it has no message and names no model.
        model = model_name(item.provider, item.model) or (
            "unknown: nothing was stored" if item.message_id is None else None
        )
        message = item.message_id or "not stored"
        cause = item.cause or (item.why + (f" ({item.reason})" if item.reason else ""))
        rows.append(
            f'<tr class="incident" data-kind="{e(item.kind)}" data-now="{e(now)}">'
            + _cell(
                "kind",
                f'<span class="badge {e(item.kind)}" title="{e(item.why)}">{e(item.kind)}</span>',
            )
            + _cell(
                "when", f"{e(clock(item.at))} <small>({e(age(view.now - item.at))} ago)</small>"
            )
            + _cell("waited", e(age(item.waited)))
            + _cell("cause", e(cause), "cause")
            + _cell("now", e(now))
            + _cell("server", e(item.server))
            + _cell("session", e(item.session_id), "id")
            + _cell("message", e(message), "id")
            + _cell("model", e(model), "nowrap")
            + "</tr>"
        )
    headers = ("kind", "when", "waited", "cause", "now", "server", "session", "message", "model")
    return _table("incidents", headers, rows, "No stall or failure since the daemon started.")


def _history(session: SessionView, now: float) -> str:
    changes = session.history
    if not changes:
        return "-"
    items = []
    for i in range(len(changes) - 1, -1, -1):  # newest first
        change = changes[i]
        end = changes[i + 1].since if i + 1 < len(changes) else now
        lasted = age(end - change.since) + (" so far" if i + 1 == len(changes) else "")
        items.append(
            f'<li><span class="badge {e(_state_class(change.state.value))}">'
            f"{e(change.state.value)}</span> {e(lasted)} <small>from {e(clock(change.since))}"
            "</small></li>"
        )
    count = len(changes)
    return (
        f"<details><summary>{count} state{'s' if count != 1 else ''}</summary>"
        f'<ol class="history">{"".join(items)}</ol></details>'
    )


def _state_class(state: str) -> str:
    return state.replace(" ", "_")


def _sessions(view: PageView) -> tuple[int, str]:
    chosen = sorted(
        ((s.name, v) for s in view.servers for v in s.sessions),
        key=lambda item: -item[1].last_activity,
    )[:MAX_SESSIONS]
    rows = []
    for server, v in chosen:
        state = _state_class(v.state.value)
        outcome = (
            f"{v.last_outcome.value} <small>({e(age(view.now - v.last_outcome_at))} ago)</small>"
            if v.last_outcome is not None and v.last_outcome_at is not None
            else "-"
        )
        parent = (
            f"<br><small>sub-agent of {e(v.parent_session_id)}</small>"
            if v.parent_session_id
            else ""
        )
        rows.append(
            f'<tr class="session" data-state="{e(state)}" data-session="{e(v.session_id)}">'
            + _cell(
                "state",
                f'<span class="badge {e(state)}">{e(session_words(v, view.now))}</span>',
                "flow",
            )
            + _cell("last activity", e(f"{age(view.now - v.last_activity)} ago"), "nowrap flow")
            + _cell("directory", e(v.directory), "path")
            + _cell("pending", str(v.pending), "flow")
            + _cell("last outcome", outcome, "flow")
            + _cell("server", e(server), "flow")
            + _cell("session", e(v.session_id) + parent, "id")
            + _cell("history", _history(v, view.now), "flow")
            + "</tr>"
        )
    headers = (
        "state",
        "last activity",
        "directory",
        "pending",
        "last outcome",
        "server",
        "session",
        "history",
    )
    return len(chosen), _table(
        "sessions", headers, rows, "No session seen since the daemon started."
    )


def _probes(probes: Sequence[Mapping[str, object]]) -> str:
    keys: list[str] = []
    for probe in probes:
        keys += [k for k in probe if k not in keys]
    rows = [
        '<tr class="probe">' + "".join(_cell(k, e(probe.get(k))) for k in keys) + "</tr>"
        for probe in probes
    ]
    return _table("probes", keys, rows, "No probe has run yet.")


STYLE = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --card: #fff; --line: #ddd;
  --muted: #666; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e6e6; --bg: #111; --card: #1c1c1e;
  --line: #333; --muted: #999; --ok: #3fb950; --warn: #d29922; --bad: #f85149; } }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: var(--fg); background: var(--bg); }
main { max-width: 1100px; margin: 0 auto; padding: 12px; }
header h1 { font-size: 1.3em; margin: 0.2em 0; }
header p, .url, small, .empty { color: var(--muted); margin: 0.2em 0; }
h2 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
h3 { font-size: 1em; margin: 0 0 0.2em; }
.server { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 12px; margin: 6px 0; }
.server p { margin: 0.15em 0; }
.error, .cause { overflow-wrap: anywhere; }
.error { color: var(--bad); }
table { width: 100%; border-collapse: collapse; background: var(--card); }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-size: 0.85em; color: var(--muted); font-weight: 600; }
.id, .path { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em;
  overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 0.85em;
  font-weight: 600; border: 1px solid currentColor; white-space: nowrap; }
.up, .replying, .working { color: var(--ok); }
.waiting, .retrying, .blocked, .connecting, .waiting_for_a_person { color: var(--warn); }
.down, .auth_failed, .stalled, .failed, .incident .badge { color: var(--bad); }
.idle { color: var(--muted); }
details summary { cursor: pointer; color: var(--muted); }
ol.history { margin: 0.3em 0; padding-left: 1.2em; }
ol.history li { margin: 0.15em 0; }
nav a { margin-right: 1em; }
.nowrap { white-space: nowrap; }
@media (max-width: 700px) {
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border: 1px solid var(--line); border-radius: 8px; margin: 8px 0; padding: 4px 0; }
  td { border: 0; padding: 2px 10px; }
  td::before { content: attr(data-label); display: inline-block; width: 5.5rem;
    color: var(--muted); font: 13px system-ui, sans-serif; }
  /* A session is a short card: state, activity, pending and outcome flow on one or two lines. */
  table.sessions td.flow { display: inline-block; width: auto; }
  table.sessions td.flow::before { width: auto; margin-right: 0.35em; }
  table.sessions details { display: inline-block; vertical-align: top; }
}
details summary { white-space: nowrap; }
"""


def render(view: PageView) -> bytes:
    """The whole page, UTF-8."""
    total = sum(len(s.pending) for s in view.servers)
    up = sum(s.state == "up" for s in view.servers)
    probes = (
        f'<section id="probes"><h2>Probes</h2>{_probes(view.probes)}</section>'
        if view.probes is not None
        else ""
    )
    shown, sessions = _sessions(view)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>opencode-watchdog: {up}/{len(view.servers)} up, {total} pending</title>
<style>{STYLE}</style></head>
<body><main>
<header><h1>opencode-watchdog</h1>
<p>version {e(view.version)} · {e(clock(view.now))} · refreshes every {REFRESH_SECONDS} s</p>
<nav><a href="/metrics">/metrics</a><a href="/status">/status</a><a href="/healthz">/healthz</a></nav>
</header>
<section id="servers"><h2>Servers ({up}/{len(view.servers)} streams up)</h2>{_servers(view)}</section>
<section id="sessions"><h2>Sessions ({shown}, most recent first)</h2>{sessions}</section>
<section id="pending"><h2>Pending prompts ({total})</h2>{_pending(view)}</section>
<section id="incidents"><h2>Latest stalls and failures</h2>{_incidents(view)}</section>
{probes}
</main></body></html>
"""
    return page.encode("utf-8")
