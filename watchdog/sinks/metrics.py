"""Prometheus metrics: counters fed by transitions, gauges computed from live state at scrape time."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watchdog import __version__
from watchdog.core.transitions import (
    Accepted,
    Completed,
    FirstResponse,
    Outcome,
    PromptState,
    Resolved,
    Stalled,
    StallKind,
    Transition,
    Usage,
)

# Real replies run from under a second to half an hour of tool work; the buckets reach 30 minutes.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, float("inf"))

_Family = TypeVar("_Family", Counter, Histogram)

OTHER_TYPE = "other"
# What a reconcile reads over REST (the `what` of reconcile_failures_total); "directories" counts
# reconciles that left directories past the cap unread, their sessions' state unknown.
RECONCILE_READS = ("status", "permission", "question", "messages", "directories")
DEFAULT_EVENT_TYPE_CAP = 200
# Provider/model labels: at most this many distinct (provider, model) pairs over all servers get
# labels of their own; later ones count as provider="other", model="other". A prompt whose model
# is not known (it stalled before OpenCode named one, or failed before it was stored) counts as
# "unknown". Each value is cut to MAX_LABEL_CHARS.
DEFAULT_MODEL_CAP = 20
MAX_LABEL_CHARS = 100
OTHER_MODEL = "other"
UNKNOWN_MODEL = "unknown"
TOKEN_TYPES = ("input", "output", "reasoning", "cache_read", "cache_write")


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """What the scrape-time gauges need to know about one watched server."""

    name: str
    pending: dict[PromptState, int] = field(default_factory=dict)
    oldest_pending_age: float = 0.0
    stream_up: bool = False
    last_event_at: float | None = None
    evicted_sessions: int = 0
    evicted_prompts: int = 0
    unusable_times: int = 0
    api: str | None = None  # "v1" or "v2": the API the stream speaks (None before any connect)


class Metrics:
    """Owns every metric family of the daemon, registered in one registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        snapshots: Callable[[], Iterable[ServerSnapshot]],
        *,
        event_type_cap: int = DEFAULT_EVENT_TYPE_CAP,
        model_cap: int = DEFAULT_MODEL_CAP,
    ) -> None:
        self.registry = registry
        # `_created` series double the count and nothing reads them; exporters turn them off.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds...: the daemon's own.
        ProcessCollector(registry=registry)
        # `.labels()` takes a lock and builds a key on every call; children are looked up once.
        self._children: dict[tuple[object, tuple[str, ...]], object] = {}
        self.prompts_accepted = Counter(
            "opencode_watchdog_prompts_accepted",
            "Prompts (user messages) the server accepted.",
            ["server"],
            registry=registry,
        )
        self.prompts_completed = Counter(
            "opencode_watchdog_prompts_completed",
            "Prompts that ended, by outcome.",
            ["server", "outcome"],
            registry=registry,
        )
        self.stalls = Counter(
            "opencode_watchdog_stalls",
            "Stalls reported, by kind.",
            ["server", "kind"],
            registry=registry,
        )
        self.first_response = Histogram(
            "opencode_watchdog_first_response_seconds",
            "Time from acceptance to the model's first output.",
            ["server"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.reply_duration = Histogram(
            "opencode_watchdog_reply_duration_seconds",
            "Time from acceptance to the end of the prompt, by outcome.",
            ["server", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # Counted per network read into plain dicts and read at scrape time: a Prometheus child's
        # lock and key on every event cost more than the event's own decoding.
        self.events = _EventCounts(event_type_cap)
        registry.register(self.events)
        self.malformed_events = Counter(
            "opencode_watchdog_malformed_events",
            "Events that could not be decoded.",
            ["server"],
            registry=registry,
        )
        self.stream_reconnects = Counter(
            "opencode_watchdog_stream_reconnects",
            "Times a stream was opened again after it had been up or had failed.",
            ["server"],
            registry=registry,
        )
        self.alert_deliveries = Counter(
            "opencode_watchdog_alert_deliveries",
            "Alert deliveries to webhooks and Alertmanagers, by sink and result.",
            ["sink", "result"],
            registry=registry,
        )
        self.oversized = Counter(
            "opencode_watchdog_oversized",
            "Stream events and REST answers skipped because they exceeded the size cap.",
            ["server", "what"],
            registry=registry,
        )
        self.task_restarts = Counter(
            "opencode_watchdog_task_restarts",
            "Daemon tasks that died unexpectedly and were restarted, by task and server.",
            ["task", "server"],
            registry=registry,
        )
        self.config_reload_failures = Counter(
            "opencode_watchdog_config_reload_failures",
            "Reloads (SIGHUP) refused because the new configuration did not load; the old one runs on.",
            registry=registry,
        )
        # Per provider and model (bounded: see DEFAULT_MODEL_CAP).
        self.model_labels = ModelLabels(model_cap)
        self.model_first_response = Histogram(
            "opencode_watchdog_model_first_response_seconds",
            "Time from the start of a prompt's turn to the model's first output, by provider and "
            "model (the provider's share: waits behind an earlier prompt are left out).",
            ["server", "provider", "model"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.model_stalls = Counter(
            "opencode_watchdog_model_stalls",
            "Stalls reported, by provider, model and kind.",
            ["server", "provider", "model", "kind"],
            registry=registry,
        )
        self.model_failures = Counter(
            "opencode_watchdog_model_failures",
            "Prompts that ended in an error (outcome failed), by provider and model.",
            ["server", "provider", "model"],
            registry=registry,
        )
        self.tokens = Counter(
            "opencode_watchdog_tokens",
            "Tokens used by completed assistant messages, by provider, model and type "
            "(input, output, reasoning, cache_read, cache_write).",
            ["server", "provider", "model", "type"],
            registry=registry,
        )
        self.cost = Counter(
            "opencode_watchdog_cost_usd",
            "Cost of completed assistant messages as OpenCode reports it (US dollars), by "
            "provider and model.",
            ["server", "provider", "model"],
            registry=registry,
        )
        self.reconcile_failures = Counter(
            "opencode_watchdog_reconcile_failures",
            "REST reads after a (re)connect that failed or were beyond the reconcile's reach, by what"
            " (status, permission, question, messages, directories); each is unknown to the tracker.",
            ["server", "what"],
            registry=registry,
        )
        registry.register(_StateCollector(snapshots))

    def count_event(self, server: str, event_type: str, n: int = 1) -> None:
        """Count one received event; types past the cap share the label ``other``."""
        self.events.add(server, {event_type: n})

    def count_events(self, server: str, types: dict[str, int]) -> None:
        """Count several received events at once: ``{type: how many}``."""
        if types:
            self.events.add(server, types)

    def _child(self, family: _Family, *labels: str) -> _Family:
        key = (family, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child  # type: ignore[return-value] # stored under its own family

    def register_server(self, server: str) -> None:
        """Make a server's series exist (at zero) before its first event, so rates work from the start."""
        self.prompts_accepted.labels(server=server)
        self.stream_reconnects.labels(server=server)
        self.malformed_events.labels(server=server)
        for outcome in Outcome:
            self.prompts_completed.labels(server=server, outcome=outcome.value)
        for kind in StallKind:
            self.stalls.labels(server=server, kind=kind.value)
        for what in RECONCILE_READS:
            self.reconcile_failures.labels(server=server, what=what)

    def emit(self, transition: Transition) -> None:
        """Sink method: turn transitions into counts."""
        server = transition.prompt.server
        ref = transition.prompt
        match transition:
            case Accepted():
                self._child(self.prompts_accepted, server).inc()
            case FirstResponse(latency=latency, since_turn=since_turn):
                self._child(self.first_response, server).observe(latency)
                provider, model = self._model(server, ref.provider, ref.model)
                self._child(self.model_first_response, server, provider, model).observe(since_turn)
            case Stalled(kind=kind):
                self._child(self.stalls, server, kind.value).inc()
                provider, model = self._model(server, ref.provider, ref.model)
                self._child(self.model_stalls, server, provider, model, kind.value).inc()
            case Completed(outcome=outcome, duration=duration):
                self._child(self.prompts_completed, server, outcome.value).inc()
                self._child(self.reply_duration, server, outcome.value).observe(duration)
                if outcome is Outcome.FAILED:
                    provider, model = self._model(server, ref.provider, ref.model)
                    self._child(self.model_failures, server, provider, model).inc()
            case Usage(provider=used_provider, model=used_model, tokens=tokens, cost=cost):
                provider, model = self._model(server, used_provider, used_model)
                if tokens is not None:
                    for kind_name, n in zip(
                        TOKEN_TYPES,
                        (
                            tokens.input,
                            tokens.output,
                            tokens.reasoning,
                            tokens.cache_read,
                            tokens.cache_write,
                        ),
                        strict=True,
                    ):
                        if n > 0:
                            self._child(self.tokens, server, provider, model, kind_name).inc(n)
                if cost is not None and cost > 0 and math.isfinite(cost):
                    self._child(self.cost, server, provider, model).inc(cost)
            case Resolved():
                pass

    def _model(self, server: str, provider: str | None, model: str | None) -> tuple[str, str]:
        """The bounded labels of a provider/model; its series exist at zero from its first
        sighting on a server, so the first stall or failure shows in rate() too."""
        labels, new = self.model_labels.labels(server, provider, model)
        if new:
            p, m = labels
            self._child(self.model_failures, server, p, m)
            self._child(self.cost, server, p, m)
            for kind in StallKind:
                self._child(self.model_stalls, server, p, m, kind.value)
            for kind_name in TOKEN_TYPES:
                self._child(self.tokens, server, p, m, kind_name)
        return labels


class ModelLabels:
    """Bounded (provider, model) label values: the first ``cap`` distinct pairs keep their names,
    later ones share ``other``; a missing provider and model is ``unknown``."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._known: set[tuple[str, str]] = set()
        self._on: set[tuple[str, str, str]] = set()  # (server, provider, model) already made

    def labels(
        self, server: str, provider: str | None, model: str | None
    ) -> tuple[tuple[str, str], bool]:
        """The labels, and whether this server shows them for the first time."""
        if not provider and not model:
            pair = (UNKNOWN_MODEL, UNKNOWN_MODEL)
        else:
            pair = (
                (provider or UNKNOWN_MODEL)[:MAX_LABEL_CHARS],
                (model or UNKNOWN_MODEL)[:MAX_LABEL_CHARS],
            )
            if pair not in self._known:
                if len(self._known) >= self._cap:
                    pair = (OTHER_MODEL, OTHER_MODEL)
                else:
                    self._known.add(pair)
        key = (server, *pair)
        if key in self._on:
            return pair, False
        self._on.add(key)
        return pair, True


class _EventCounts(Collector):
    """``opencode_watchdog_events_total{server,type}``, kept as running totals in dicts.

    At most ``cap`` distinct types (over all servers) get a label of their own; the rest count
    as ``other``, so a server inventing types cannot grow the series without bound.
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._types: set[str] = set()
        self._totals: dict[str, dict[str, int]] = {}

    def add(self, server: str, counts: dict[str, int]) -> None:
        totals = self._totals.get(server)
        if totals is None:
            totals = self._totals[server] = {}
        types = self._types
        for event_type, n in counts.items():
            label = event_type
            if label not in types:
                if len(types) >= self._cap:
                    label = OTHER_TYPE
                else:
                    types.add(label)
            totals[label] = totals.get(label, 0) + n

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "opencode_watchdog_events",
            "Events received from the servers' streams, by type (rare types beyond a cap count as other).",
            labels=["server", "type"],
        )
        for server, totals in list(self._totals.items()):
            for event_type, n in list(totals.items()):
                family.add_metric([server, event_type], n)
        yield family


class _StateCollector(Collector):
    """Gauges that describe state are read from the trackers when Prometheus scrapes."""

    def __init__(self, snapshots: Callable[[], Iterable[ServerSnapshot]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "opencode_watchdog_prompts_pending",
            "Prompts accepted and not yet ended, by what they are doing now.",
            labels=["server", "state"],
        )
        oldest = GaugeMetricFamily(
            "opencode_watchdog_oldest_pending_prompt_seconds",
            "Age of the oldest pending prompt (0 when none is pending).",
            labels=["server"],
        )
        up = GaugeMetricFamily(
            "opencode_watchdog_stream_up",
            "1 while the server's event stream is connected and live.",
            labels=["server"],
        )
        last = GaugeMetricFamily(
            "opencode_watchdog_last_event_timestamp_seconds",
            "When the last event (heartbeats included) arrived from the server.",
            labels=["server"],
        )
        evictions = CounterMetricFamily(
            "opencode_watchdog_evictions",
            "Sessions and pending prompts forgotten because the memory limits were reached.",
            labels=["server", "what"],
        )
        unusable = CounterMetricFamily(
            "opencode_watchdog_unusable_prompt_times",
            "Prompts whose server time was no usable time (each was timed from its arrival).",
            labels=["server"],
        )
        api = GaugeMetricFamily(
            "opencode_watchdog_server_api",
            "1 for the API generation the server's stream speaks (v1: /global/event, v2: /api/event).",
            labels=["server", "api"],
        )
        for snap in self._snapshots():
            if snap.api is not None:
                api.add_metric([snap.name, snap.api], 1.0)
            unusable.add_metric([snap.name], snap.unusable_times)
            evictions.add_metric([snap.name, "sessions"], snap.evicted_sessions)
            evictions.add_metric([snap.name, "prompts"], snap.evicted_prompts)
            for state in PromptState:
                pending.add_metric([snap.name, state.value], snap.pending.get(state, 0))
            oldest.add_metric([snap.name], snap.oldest_pending_age)
            up.add_metric([snap.name], 1.0 if snap.stream_up else 0.0)
            if snap.last_event_at is not None:
                last.add_metric([snap.name], snap.last_event_at)
        build = GaugeMetricFamily(
            "opencode_watchdog_build_info",
            "Always 1; the version label says which build runs.",
            labels=["version"],
        )
        build.add_metric([__version__], 1.0)
        yield from (pending, oldest, up, last, evictions, unusable, api, build)
