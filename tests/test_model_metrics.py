"""Per provider and model metrics: first-response latency, stalls by kind, failures, tokens by
type and cost; their labels, their bound (the cap, `other`, `unknown`) and their values."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from tests.conftest import FIXTURES, capture, run
from watchdog.core.events import PromptAdmitted, ReplyOpened, SessionRun, StatusChanged, Tokens
from watchdog.core.settings import Timeouts
from watchdog.core.tracker import Tracker
from watchdog.core.transitions import (
    Completed,
    FirstResponse,
    Outcome,
    PromptRef,
    Stalled,
    StallKind,
    Usage,
)
from watchdog.sinks.metrics import MAX_LABEL_CHARS, TOKEN_TYPES, Metrics

TIMEOUTS = Timeouts(first_response=5.0, inactivity=5.0)


def metrics(**kwargs: int) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return Metrics(registry, list, **kwargs), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def fixture_tokens(scenario: str) -> dict[str, int]:
    """Tokens of each completed assistant message in a capture, counted once per message."""
    totals = dict.fromkeys(TOKEN_TYPES, 0)
    seen: set[str] = set()
    path = FIXTURES / "1.18.33" / f"{scenario}.event.sse"
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        info = event.get("properties", {}).get("info", {})
        if event.get("type") != "message.updated" or info.get("role") != "assistant":
            continue
        if not info.get("time", {}).get("completed") or info["id"] in seen:
            continue
        seen.add(info["id"])
        tokens = info["tokens"]
        totals["input"] += tokens["input"]
        totals["output"] += tokens["output"]
        totals["reasoning"] += tokens["reasoning"]
        totals["cache_read"] += tokens["cache"]["read"]
        totals["cache_write"] += tokens["cache"]["write"]
    return totals


def test_a_real_answer_counts_its_tokens_and_first_response_per_model() -> None:
    """The normal capture through the tracker: its tokens by type, under fake/fake-1, equal what
    the capture's completed assistant messages say; one first-response observation."""
    _, out = run("1.18.33", "normal", TIMEOUTS)
    m, registry = metrics()
    for transition in out:
        m.emit(transition)
    expected = fixture_tokens("normal")
    assert expected["input"] > 0
    assert expected["output"] > 0
    labels = {"server": "test", "provider": "fake", "model": "fake-1"}
    for kind, n in expected.items():
        assert value(registry, "opencode_watchdog_tokens_total", **labels, type=kind) == n
    assert value(registry, "opencode_watchdog_model_first_response_seconds_count", **labels) == 1
    assert value(registry, "opencode_watchdog_cost_usd_total", **labels) == 0.0
    assert value(registry, "opencode_watchdog_model_failures_total", **labels) == 0.0
    for kind in StallKind:
        assert value(registry, "opencode_watchdog_model_stalls_total", **labels, kind=kind) == 0.0


def test_the_seed_failure_counts_under_unknown() -> None:
    """The unknown agent: nothing stored, no model named anywhere: one failure, `unknown`."""
    _, out = run("1.18.33", "unknown-agent", TIMEOUTS, linger=60)
    m, registry = metrics()
    for transition in out:
        m.emit(transition)
    unknown = {"server": "test", "provider": "unknown", "model": "unknown"}
    assert value(registry, "opencode_watchdog_model_failures_total", **unknown) == 1.0
    assert value(registry, "opencode_watchdog_model_stalls_total", **unknown, kind="failed") == 1.0
    fake = {"server": "test", "provider": "fake", "model": "fake-1"}
    assert value(registry, "opencode_watchdog_model_failures_total", **fake) == 0.0


def ref(provider: str | None, model: str | None, server: str = "s") -> PromptRef:
    return PromptRef(server, "ses_a", "msg_a", 0.0, provider=provider, model=model)


def test_distinct_models_past_the_cap_count_as_other() -> None:
    m, registry = metrics(model_cap=2)
    for name in ("m1", "m2", "m3", "m4"):
        m.emit(Stalled(ref("p", name), StallKind.NO_RESPONSE, 1.0, 1.0))
    m.emit(Stalled(ref("p", "m1", server="t"), StallKind.INACTIVE, 1.0, 1.0))  # known: kept
    stalls = "opencode_watchdog_model_stalls_total"
    assert value(registry, stalls, server="s", provider="p", model="m1", kind="no_response") == 1
    assert value(registry, stalls, server="s", provider="p", model="m2", kind="no_response") == 1
    assert value(registry, stalls, server="s", provider="p", model="m3", kind="no_response") is None
    other = {"server": "s", "provider": "other", "model": "other"}
    assert value(registry, stalls, **other, kind="no_response") == 2
    assert value(registry, stalls, server="t", provider="p", model="m1", kind="inactive") == 1
    models = {
        (s.labels["provider"], s.labels["model"])
        for family in registry.collect()
        if family.name == "opencode_watchdog_model_stalls"
        for s in family.samples
    }
    assert models == {("p", "m1"), ("p", "m2"), ("other", "other")}


def test_long_names_are_cut_and_a_missing_one_is_unknown() -> None:
    m, registry = metrics()
    m.emit(Completed(ref("p" * 500, None), Outcome.FAILED, 1.0, 1.0))
    m.emit(Completed(ref(None, None), Outcome.FAILED, 1.0, 1.0))
    failures = "opencode_watchdog_model_failures_total"
    cut = {"provider": "p" * MAX_LABEL_CHARS, "model": "unknown"}
    assert value(registry, failures, server="s", **cut) == 1
    assert value(registry, failures, server="s", provider="unknown", model="unknown") == 1


def test_usage_adds_tokens_by_type_and_cost_and_first_response_uses_the_turns_share() -> None:
    m, registry = metrics()
    tokens = Tokens(input=100, output=20, reasoning=5, cache_read=1000, cache_write=7)
    for _ in range(2):
        m.emit(Usage(ref(None, None), 1.0, "anthropic", "claude", tokens, 0.25))
    m.emit(Usage(ref(None, None), 1.0, "anthropic", "claude", None, float("nan")))
    labels = {"server": "s", "provider": "anthropic", "model": "claude"}
    assert {
        kind: value(registry, "opencode_watchdog_tokens_total", **labels, type=kind)
        for kind in TOKEN_TYPES
    } == {"input": 200, "output": 40, "reasoning": 10, "cache_read": 2000, "cache_write": 14}
    assert value(registry, "opencode_watchdog_cost_usd_total", **labels) == 0.5
    m.emit(FirstResponse(ref("anthropic", "claude"), 1.0, latency=30.0, since_turn=2.0))
    total = "opencode_watchdog_model_first_response_seconds_sum"
    assert value(registry, total, **labels) == 2.0
    assert value(registry, "opencode_watchdog_first_response_seconds_sum", server="s") == 30.0


def test_a_prompt_names_the_model_it_asked_for_from_admission() -> None:
    """OpenCode's user message carries `model: {providerID, modelID}`: a prompt that stalls
    before its reply opens is still counted under its model, not `unknown`."""
    admitted = [r.event for r in capture("1.18.33", "hang") if isinstance(r.event, PromptAdmitted)]
    assert admitted
    assert {(e.provider, e.model) for e in admitted} == {("fake", "fake-1")}
    tracker = Tracker("s", TIMEOUTS)
    out = tracker.feed(PromptAdmitted("ses_a", "msg_a", 1.0, provider="p", model="m"), 1.0)
    assert [(t.prompt.provider, t.prompt.model) for t in out] == [("p", "m")]
    # The reply names the model that answers: that one wins.
    tracker.feed(StatusChanged("ses_a", SessionRun.BUSY), 1.0)
    tracker.feed(ReplyOpened("ses_a", "msg_r", "msg_a", "p", "m2"), 1.5)
    [pending] = tracker.pending(2.0)
    assert (pending.ref.provider, pending.ref.model) == ("p", "m2")
