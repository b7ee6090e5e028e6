"""Sends stalls to Alertmanager's v2 API as alerts, re-sends them while they fire, resolves them."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import structlog

from watchdog.core.clock import iso
from watchdog.core.transitions import (
    Completed,
    PromptRef,
    Resolved,
    Stalled,
    StallKind,
    Transition,
)
from watchdog.io.outbox import Letter, Outbox, ResultCounter
from watchdog.sinks.alert import describe
from watchdog.sinks.firing import (
    DEFAULT_MAX_ACTIVE,
    FIRING_KINDS,
    Firing,
    FiringAlerts,
    Identity,
    ProbeFiring,
    identity,
)

log = structlog.get_logger("watchdog.sinks.alertmanager")

STALLED_ALERT = "OpenCodePromptStalled"
DROPPED_ALERT = "OpenCodePromptDropped"
FAILED_ALERT = "OpenCodePromptFailed"
API_PATH = "/api/v2/alerts"
# Alertmanager's own examples resend every minute; its clients (Prometheus) do the same.
DEFAULT_RESEND_INTERVAL = 60.0
# A dropped or failed prompt is final: the alert stays up this long so it gets routed and seen,
# then ends.
DEFAULT_DROPPED_FOR = 3600.0
# Thousands of active alerts in one POST would make one huge request body; Alertmanager takes
# any number of smaller ones just as well.
BATCH_SIZE = 500

_ALERT_NAMES = {StallKind.DROPPED: DROPPED_ALERT, StallKind.FAILED: FAILED_ALERT}


@dataclass(slots=True)
class _Firing:
    """An alert in Alertmanager's form: what to send, re-send, and resolve with."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    what: str


def alerts_url(base: str) -> str:
    """The v2 alerts endpoint under ``base``, which may carry a path prefix (a reverse proxy)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith(API_PATH):
        path += API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def auth_headers(
    basic_auth: tuple[str, str] | None = None, bearer_token: str | None = None
) -> dict[str, str]:
    """The Authorization header for basic or bearer auth (never both; empty for neither)."""
    if basic_auth is not None and bearer_token is not None:
        raise ValueError("Alertmanager auth: give basic_auth or bearer_token, not both")
    if basic_auth is not None:
        username, password = basic_auth
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return {"authorization": f"Basic {token}"}
    if bearer_token is not None:
        return {"authorization": f"Bearer {bearer_token}"}
    return {}


def _labels(ref: PromptRef, kind: StallKind) -> dict[str, str]:
    labels = {
        "alertname": _ALERT_NAMES.get(kind, STALLED_ALERT),
        "server": ref.server,
        "kind": kind.value,
        "session_id": ref.session_id,
        "severity": "warning",
    }
    # Alertmanager treats an empty label as absent, so an unknown directory (or the message id
    # of a prompt that failed before it was stored) is left out.
    if ref.message_id:
        labels["message_id"] = ref.message_id
    if ref.directory:
        labels["directory"] = ref.directory
    return labels


def _seconds(value: float) -> str:
    return f"{round(value, 1):g} s"


def _annotations(stall: Stalled) -> dict[str, str]:
    ref = stall.prompt
    waited = _seconds(stall.waited)
    if stall.kind is StallKind.NO_RESPONSE:
        summary = f"A prompt on OpenCode server {ref.server} got no response in {waited}."
        what = f"no first response from the model {waited} after the prompt was accepted"
    elif stall.kind is StallKind.INACTIVE:
        summary = f"A reply on OpenCode server {ref.server} went quiet ({waited} in)."
        what = f"the reply started, then went quiet; {waited} since the prompt was accepted"
    elif stall.kind is StallKind.FAILED:
        name = stall.error.name if stall.error else stall.reason or "an error"
        summary = f"A prompt on OpenCode server {ref.server} failed: {name}."
        what = f"the prompt ended in {name} {waited} after it was accepted; no reply will come"
    else:
        summary = f"OpenCode server {ref.server} dropped a prompt without finishing its reply."
        what = f"the session went idle {waited} after the prompt was accepted, reply unfinished"
    message = ref.message_id or "(never stored)"
    parts = [f"Session {ref.session_id}, message {message} on server {ref.server}"]
    if ref.directory:
        parts[0] += f" (directory {ref.directory})"
    if ref.parent_session_id:
        parts[0] += f", sub-agent of session {ref.parent_session_id}"
    parts[0] += f": {what}."
    if stall.reason:
        parts.append(f"Reason: {stall.reason}.")
    if stall.error is not None and stall.error.message:
        parts.append(f"Error: {stall.error.message}")
    if ref.provider or ref.model:
        parts.append(f"Provider {ref.provider or 'unknown'}, model {ref.model or 'unknown'}.")
    retry = stall.retry
    if retry is not None:
        attempt = f"attempt {retry.attempt}" if retry.attempt is not None else "retrying"
        parts.append(f"OpenCode is retrying the provider ({attempt}): {retry.message or '-'}.")
    return {"summary": summary, "description": " ".join(parts)}


class AlertmanagerSink:
    """Turns stalls into Alertmanager alerts, one Outbox per Alertmanager (replicas all get all).

    Alertmanager forgets an alert at its ``endsAt``: firing alerts get a short one and are
    re-sent by ``run()`` every ``resend_interval``, so the alerts of a daemon that died end by
    themselves; a resolution is the same labels with ``endsAt`` = now.

    What fires is kept in ``firing``: the daemon's store (kept across reloads, updated by the
    daemon after every sink has seen a transition), or, without one, the sink's own. ``run()``
    sends every firing alert at once when it starts: a sink added by a reload learns them.
    """

    def __init__(
        self,
        urls: Sequence[str],
        client: httpx.AsyncClient,
        *,
        count: ResultCounter,
        generator_url: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        resend_interval: float = DEFAULT_RESEND_INTERVAL,
        validity: float | None = None,
        dropped_for: float = DEFAULT_DROPPED_FOR,
        max_active: int = DEFAULT_MAX_ACTIVE,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        firing: FiringAlerts | None = None,
    ) -> None:
        headers = auth_headers(basic_auth, bearer_token)
        self.outboxes = [
            Outbox("alertmanager", alerts_url(url), client, count=count, headers=headers)
            for url in urls
        ]
        self.generator_url = generator_url
        self.resend_interval = resend_interval
        # Several missed resends in a row, not one slow delivery, should let an alert lapse.
        self.validity = validity if validity is not None else 4 * resend_interval
        self.dropped_for = dropped_for
        self._count = count
        # Without the daemon's store the sink keeps its own, and follows the transitions itself.
        self._owns_store = firing is None
        self.firing = (
            firing
            if firing is not None
            else FiringAlerts(max_active=max_active, on_untracked=self._untracked)
        )
        self._clock = clock
        self._sleep = sleep

    @property
    def active(self) -> dict[Identity, Firing]:
        """The alerts firing now (the store's)."""
        return self.firing.active

    @property
    def untracked(self) -> int:
        """Alerts sent once but not kept (the store was full)."""
        return self.firing.untracked

    def _untracked(self, what: str) -> None:
        self._count("untracked")
        log.error(
            "alert.untracked",
            sink="alertmanager",
            what=what,
            reason=f"{self.firing.max_active} alerts already firing; this one will not be re-sent",
        )

    def emit(self, transition: Transition) -> None:
        if isinstance(transition, Stalled):
            self._fire(transition)
        elif isinstance(transition, Resolved):
            self._resolve(identity(transition.prompt, transition.kind), describe(transition))
        elif isinstance(transition, Completed):
            # The tracker resolves before it completes; this only matters if that ever changes.
            for kind in FIRING_KINDS:
                key = identity(transition.prompt, kind)
                if key in self.firing.active:
                    ref = transition.prompt
                    what = f"{kind.value}/resolved {ref.server} {ref.session_id} {ref.message_id}"
                    self._resolve(key, what)
        if self._owns_store:
            self.firing.note(transition)

    def fire_alert(self, probe: ProbeFiring) -> None:
        """Fire an alert that is not about one prompt (a failed probe); re-sent until resolved."""
        firing = _probe_form(probe)
        self._post([self._alert(firing, self._clock() + self.validity)], firing.what)
        if self._owns_store:
            self.firing.fire_probe(probe)

    def resolve_alert(self, key: Identity, what: str) -> None:
        """Resolve an alert fired with ``fire_alert``."""
        self._resolve(key, what)
        if self._owns_store:
            self.firing.resolve(key)

    async def run(self) -> None:
        """Send what fires now, then re-send it every ``resend_interval``, until cancelled."""
        self.resend()
        while True:
            await self._sleep(self.resend_interval)
            self.resend()

    def resend(self) -> None:
        """Post all firing alerts again with a fresh ``endsAt``."""
        if not len(self.firing):
            return
        ends_at = self._clock() + self.validity
        alerts = [self._alert(_form(f), ends_at) for f in self.firing]
        for start in range(0, len(alerts), BATCH_SIZE):
            batch = alerts[start : start + BATCH_SIZE]
            self._post(batch, f"resend of {len(batch)} firing alerts")

    def _fire(self, stall: Stalled) -> None:
        firing = _stall_form(stall)
        if stall.kind not in FIRING_KINDS:
            # Terminal: one alert that ends by itself; nothing will resolve or re-send it.
            self._post([self._alert(firing, stall.at + self.dropped_for)], firing.what)
            return
        self._post([self._alert(firing, self._clock() + self.validity)], firing.what)

    def _resolve(self, key: Identity, what: str) -> None:
        # Only alerts told to Alertmanager: an unknown one would appear as a resolved alert in
        # its group's next notification. (The store is updated after every sink has seen it.)
        firing = self.firing.get(key)
        if firing is not None:
            self._post([self._alert(_form(firing), self._clock())], what)

    def _alert(self, firing: _Firing, ends_at: float) -> dict[str, Any]:
        # Alertmanager rejects an alert that ends before it starts (a clock step backwards).
        alert: dict[str, Any] = {
            "labels": firing.labels,
            "annotations": firing.annotations,
            "startsAt": self._stamp(min(firing.starts_at, ends_at)),
            "endsAt": self._stamp(ends_at),
        }
        if self.generator_url:
            alert["generatorURL"] = self.generator_url
        return alert

    def _stamp(self, ts: float) -> str:
        # Alertmanager needs a time: one no date can show becomes the time of sending.
        return iso(ts) or iso(self._clock()) or "1970-01-01T00:00:00.000Z"

    def _post(self, alerts: list[dict[str, Any]], what: str) -> None:
        for outbox in self.outboxes:
            outbox.put(Letter(body=alerts, what=what))


def _stall_form(stall: Stalled) -> _Firing:
    """A stall in Alertmanager's form, with the labels it fired with (its ref as it was then)."""
    return _Firing(
        labels=_labels(stall.prompt, stall.kind),
        annotations=_annotations(stall),
        starts_at=stall.at,
        what=describe(stall),
    )


def _probe_form(probe: ProbeFiring) -> _Firing:
    return _Firing(
        labels=probe.labels, annotations=probe.annotations, starts_at=probe.since, what=probe.what
    )


def _form(firing: Firing) -> _Firing:
    if firing.stall is not None:
        return _stall_form(firing.stall)
    assert firing.probe is not None
    return _probe_form(firing.probe)
