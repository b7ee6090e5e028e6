"""The Grafana dashboard queries only real metrics in valid PromQL, and its provisioning loads."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from watchdog.app.prober import ProbeMetrics
from watchdog.core.events import Tokens
from watchdog.core.settings import ProbeShape
from watchdog.core.transitions import FirstResponse, PromptRef, Usage
from watchdog.io.probe import ProbeResult, Step, StepTiming
from watchdog.sinks.metrics import Metrics, ServerSnapshot

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_FILE = ROOT / "grafana" / "dashboards" / "opencode-watchdog.json"
PROVIDER_FILE = ROOT / "grafana" / "provisioning" / "dashboards" / "opencode-watchdog.yaml"
DATASOURCE_FILE = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.example.yaml"
RULES_FILE = ROOT / "prometheus" / "opencode-watchdog.rules.yml"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
SERVER_QUERY = "label_values(opencode_watchdog_stream_up, server)"

# Grafana variables, replaced by values that make valid PromQL in the same place.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${server}": ".*",
    "$server": ".*",
}
# Series Prometheus makes itself rather than scraping them from the daemon.
PROMETHEUS_SERIES = {"up"}

_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+")
_NUMBER = re.compile(
    r"(?<![\w:])(?:0x[0-9a-f]+|(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|nan)(?![\w:])", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_CALL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*\(")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_WORDS = re.compile(r"[A-Za-z0-9_]+(?:\|[A-Za-z0-9_]+)*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "group_left", "group_right"}


def live_metrics_text() -> str:
    """The /metrics text a running daemon serves (swap this for the real daemon's endpoint)."""
    registry = CollectorRegistry()
    snapshot = ServerSnapshot(name="x", stream_up=True, last_event_at=1.0)
    metrics = Metrics(registry, lambda: [snapshot])
    metrics.register_server("x")
    metrics.first_response.labels(server="x").observe(1.0)
    metrics.reply_duration.labels(server="x", outcome="answered").observe(1.0)
    # One answered prompt of a known model: the per provider/model families get their series.
    ref = PromptRef("x", "ses_a", "msg_a", 0.0, provider="fake", model="fake-1")
    metrics.emit(FirstResponse(ref, 1.0, latency=1.0, since_turn=1.0))
    metrics.emit(Usage(ref, 2.0, "fake", "fake-1", Tokens(input=10, output=5), 0.01))
    ProbeMetrics(registry).record(
        ProbeResult("x", ProbeShape.CURRENT, True, 1.0, (StepTiming(Step.STORED, 0.1, True),))
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        response.raise_for_status()
        return response.text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def series_names(exposition: str) -> set[str]:
    """Every series name a query could select from an exposition, samples or not."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def label_values(exposition: str) -> dict[str, dict[str, set[str]]]:
    """For each sampled series name, the values each of its labels takes."""
    values: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = values.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return values


def literal_matchers(expr: str) -> set[tuple[str, str, str]]:
    """(metric, label, value) for each `=` matcher and each word of an `=~"a|b"` matcher."""
    found: set[tuple[str, str, str]] = set()
    for metric, matchers in _SELECTOR.findall(expr):
        for label, op, value in _MATCHER.findall(matchers):
            if op == "=" or (op == "=~" and _WORDS.fullmatch(value)):
                found.update((metric, label, word) for word in value.split("|"))
    return found


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = _STRING.sub(" ", expr)
    for pattern in (_MATCHERS, _RANGE, _GROUPING, _OFFSET, _CALL, _NUMBER):
        text = pattern.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def to_promql(expr: str) -> str:
    """A dashboard expression with its Grafana variables replaced by valid PromQL."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return data


def query_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries data (rows left out), nested ones included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from (inner for inner in panel.get("panels", []) if inner["type"] != "row")
        else:
            yield panel


def dashboard_exprs() -> list[str]:
    """The PromQL expression of every panel target."""
    return [
        target["expr"] for panel in query_panels(load_dashboard()) for target in panel["targets"]
    ]


def recording_rule_names() -> set[str]:
    """Names recorded by the Prometheus rules file."""
    doc = yaml.safe_load(RULES_FILE.read_text())
    return {
        rule["record"] for group in doc["groups"] for rule in group["rules"] if "record" in rule
    }


def rules_file_exprs() -> list[str]:
    """The expression of every rule in the Prometheus rules file."""
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [str(rule["expr"]) for group in doc["groups"] for rule in group["rules"]]


def server_variable(dashboard: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's `server` template variable."""
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    server: dict[str, Any] = variables["server"]
    return server


@pytest.fixture(scope="module")
def exposition() -> str:
    """One scrape of the live /metrics endpoint, shared by the tests of this module."""
    return live_metrics_text()


@pytest.fixture(scope="module")
def exported_names(exposition: str) -> set[str]:
    """Series names read from the live /metrics endpoint."""
    return series_names(exposition)


def test_live_metrics_expose_the_daemon_families(exported_names: set[str]) -> None:
    """The live endpoint yields counters as _total and histograms as _bucket/_sum/_count."""
    assert "opencode_watchdog_stalls_total" in exported_names
    assert "opencode_watchdog_first_response_seconds_bucket" in exported_names
    assert "opencode_watchdog_reply_duration_seconds_count" in exported_names
    assert "opencode_watchdog_stream_up" in exported_names
    assert "opencode_watchdog_alert_deliveries_total" in exported_names
    assert "opencode_watchdog_stalls" not in exported_names


def test_metric_name_extraction_reads_promql() -> None:
    """Metric names are found past functions, matchers, ranges, groupings, numbers and strings."""
    expr = (
        'histogram_quantile(0.95, sum by (server, le) (rate(a_bucket{le="+Inf",x=~"y|z"}[5m])))'
        " / on (server) group_left (kind) b:rec:rate5m offset 1h > bool 1e-3"
        ' or time() - c_seconds unless absent(d{job="e"}) and 60 * sum(f) without (g)'
    )
    assert metric_names_in(expr) == {"a_bucket", "b:rec:rate5m", "c_seconds", "d", "f"}
    assert literal_matchers(expr) == {
        ("a_bucket", "le", "+Inf"),
        ("a_bucket", "x", "y"),
        ("a_bucket", "x", "z"),
        ("d", "job", "e"),
    }


def test_dashboard_uses_only_exported_metrics(exported_names: set[str]) -> None:
    """Every panel query selects metrics the daemon exports or the rules file records."""
    known = exported_names | recording_rule_names()
    unknown = {name for expr in dashboard_exprs() for name in metric_names_in(expr)} - known
    assert unknown == set()


def test_dashboard_recording_rules_exist() -> None:
    """Every recorded name the dashboard reads (level:metric:operation) is in the rules file."""
    used = {name for expr in dashboard_exprs() for name in metric_names_in(expr) if ":" in name}
    assert used, "the dashboard is expected to read the recording rules"
    assert used - recording_rule_names() == set()


def test_rules_use_only_exported_metrics(exported_names: set[str]) -> None:
    """The rules read metrics the daemon exports, Prometheus's own `up`, or their own records."""
    known = exported_names | recording_rule_names() | PROMETHEUS_SERIES
    unknown = {name for expr in rules_file_exprs() for name in metric_names_in(expr)} - known
    assert unknown == set()


def test_label_matchers_use_exported_label_values(exposition: str) -> None:
    """Literal matchers such as state="stalled" name labels and values the daemon exports."""
    live = label_values(exposition)
    wrong = set()
    for expr in dashboard_exprs() + rules_file_exprs():
        for metric, label, value in literal_matchers(expr):
            if metric in live and value not in live[metric].get(label, set()):
                wrong.add((metric, label, value))
    assert wrong == set()


def test_server_variable_reads_an_exported_metric(exported_names: set[str]) -> None:
    """The server variable is a multi-value label_values query on the exported stream_up gauge."""
    variable = server_variable(load_dashboard())
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    assert text == SERVER_QUERY
    assert variable["type"] == "query"
    assert variable["multi"] is True
    assert variable["datasource"] == DATASOURCE_REF
    assert "opencode_watchdog_stream_up" in exported_names


def test_dashboard_covers_the_stall_signals() -> None:
    """Stalls, pending, oldest age, latency, outcomes, streams and events each have a panel."""
    used = {name for expr in dashboard_exprs() for name in metric_names_in(expr)}
    assert {
        "opencode_watchdog_stalls_total",
        "opencode_watchdog_prompts_pending",
        "opencode_watchdog_oldest_pending_prompt_seconds",
        "opencode_watchdog_first_response_seconds_bucket",
        "server_quantile:opencode_watchdog_first_response_seconds:histogram_quantile_5m",
        "server_outcome:opencode_watchdog_prompts_completed:rate5m",
        "opencode_watchdog_stream_up",
        "opencode_watchdog_stream_reconnects_total",
        "opencode_watchdog_events_total",
    } <= used


def test_dashboard_covers_the_provider_and_model_families(exported_names: set[str]) -> None:
    """First response, stalls, failures, tokens and cost by provider and model each have a
    panel, and each is a series the live endpoint exports."""
    used = {name for expr in dashboard_exprs() for name in metric_names_in(expr)}
    families = {
        "opencode_watchdog_model_first_response_seconds_bucket",
        "opencode_watchdog_model_stalls_total",
        "opencode_watchdog_model_failures_total",
        "opencode_watchdog_tokens_total",
        "opencode_watchdog_cost_usd_total",
    }
    assert families <= used
    assert families <= exported_names


def test_dashboard_exprs_parse_with_promtool(tmp_path: Path) -> None:
    """Every panel query, with its Grafana variables filled in, is PromQL that promtool accepts."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/ensure-debian-tools.sh (as root)")
    rules = [
        {"record": f"dashboard:expr_{index}:check", "expr": to_promql(expr)}
        for index, expr in enumerate(dashboard_exprs())
    ]
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_dashboard_has_datasource_variable_and_no_inputs() -> None:
    """The data source is a Prometheus datasource variable, not an import-time __inputs entry."""
    dashboard = load_dashboard()
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert dashboard["uid"] == "opencode-watchdog"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["id"] is None


def test_every_panel_uses_the_datasource_variable() -> None:
    """Each querying panel, and each of its targets, points at ${datasource}."""
    panels = list(query_panels(load_dashboard()))
    assert panels
    for panel in panels:
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, panel["title"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Panel ids are unique and no two panels share a cell of the 24-column grid."""
    panels = load_dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_dashboard_provider_loads() -> None:
    """The dashboard provider is a file provider whose path ends in the dashboard's folder."""
    doc = yaml.safe_load(PROVIDER_FILE.read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["name"] == "opencode-watchdog"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/opencode-watchdog"


def test_example_datasource_loads() -> None:
    """The example data source is a Prometheus one with a URL."""
    doc = yaml.safe_load(DATASOURCE_FILE.read_text())
    assert doc["apiVersion"] == 1
    (datasource,) = doc["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"].startswith("http")
    assert datasource["access"] == "proxy"
