"""The Prometheus rules file is valid, unit-tested by promtool, and every alert is complete."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).resolve().parent.parent / "prometheus"
RULES_FILE = PROMETHEUS_DIR / "opencode-watchdog.rules.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "opencode-watchdog.rules.test.yml"
RUNBOOK_BASE = "__RUNBOOK_URL__#runbook-"  # the install step puts the real address in
SEVERITIES = {"critical", "warning", "info"}


def promtool() -> str:
    """Path of promtool; a missing one fails the test, since these checks are the point."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run scripts/ensure-debian-tools.sh (as root)")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in the rules' folder (the test file names the rules file relative to it)."""
    return subprocess.run(
        [promtool(), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load_rules() -> list[dict[str, Any]]:
    """Every rule of every group in the rules file."""
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules only."""
    return [rule for rule in load_rules() if "alert" in rule]


def test_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the file, with every lint it knows made fatal."""
    result = run_promtool("check", "rules", "--lint=all", "--lint-fatal", RULES_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_pass_promtool_unit_tests() -> None:
    """`promtool test rules` passes every case in the rules' unit-test file."""
    result = run_promtool("test", "rules", RULES_TEST_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_file_has_alerts_and_recording_rules() -> None:
    """The file defines the expected alerts and at least one recording rule."""
    names = {rule["alert"] for rule in alert_rules()}
    assert names == {
        "OpenCodePromptStalled",
        "OpenCodePromptsDropped",
        "OpenCodePromptsFailed",
        "OpenCodeWatchdogStreamDown",
        "OpenCodeWatchdogDown",
        "OpenCodePromptsRetrying",
        "OpenCodeProbeFailed",
    }
    assert any("record" in rule for rule in load_rules())


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_alert_is_complete(rule: dict[str, Any]) -> None:
    """An alert has a `for`, a known severity, a summary, a description and its runbook anchor."""
    assert "for" in rule, "state the `for` even when it is 0m, with the reason in a comment"
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    assert annotations.get("summary", "").strip()
    assert annotations.get("description", "").strip()
    assert annotations.get("runbook_url") == RUNBOOK_BASE + rule["alert"].lower()


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """Each alert has a promtool case where it fires and one where it stays silent."""
    doc = yaml.safe_load(RULES_TEST_FILE.read_text())
    fired: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


def test_every_recording_rule_is_unit_tested() -> None:
    """Each recording rule's output is checked by some promql_expr_test."""
    doc = yaml.safe_load(RULES_TEST_FILE.read_text())
    exprs = " ".join(
        check["expr"] for case in doc["tests"] for check in case.get("promql_expr_test", [])
    )
    records = {rule["record"] for rule in load_rules() if "record" in rule}
    assert {name for name in records if name not in exprs} == set()


def test_runbook_links_are_set_at_install_and_land_on_readme_headings() -> None:
    """The rules' runbook base is a placeholder the README's install step replaces, and every
    alert's anchor is the anchor of a `### Runbook: <alert>` heading in the README."""
    readme = (PROMETHEUS_DIR.parent / "README.md").read_text(encoding="utf-8")
    assert 'sed "s|__RUNBOOK_URL__|$RUNBOOK_URL|" prometheus/opencode-watchdog.rules.yml' in readme
    headings = {
        "runbook-" + line.removeprefix("### Runbook: ").strip().lower()
        for line in readme.splitlines()
        if line.startswith("### Runbook: ")
    }
    anchors = {rule["annotations"]["runbook_url"].split("#", 1)[1] for rule in alert_rules()}
    assert anchors <= headings
