"""``python -m bench``: run the benchmarks, print a table, write ``bench/results/<name>.json``.

    python -m bench                       # every case on the code in this checkout
    python -m bench --against baseline    # also on the code of a git ref, case by case, side by side
    python -m bench --only ingest,busy_host --name mine
    python -m bench --compare bench/results/baseline.json bench/results/mine.json

Each case runs in a fresh process. ``--against REF`` extracts REF's ``watchdog/`` package with
``git archive`` into a temporary directory and runs the same case on it right before the current
code, so both sets of numbers come from the same run and the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CASES = [
    "ingest",
    "busy_host",
    "real_steady",
    "real_burst",
    "scale_admit",
    "stalls_queued",
    "stalls_sessions",
    "many_servers",
]

# (case, key, label, unit, goal, lower is better)
ROWS: list[tuple[str, str, str, str, float | None, bool]] = [
    ("ingest", "cpu_us_per_event", "ingest: CPU per event", "µs", None, True),
    ("ingest", "floor_cpu_us_per_event", "ingest: floor CPU per event", "µs", None, True),
    ("ingest", "events_per_s", "ingest: events/s", "/s", None, False),
    ("ingest", "floor_events_per_s", "ingest: floor events/s", "/s", None, False),
    ("ingest", "rate_vs_floor", "ingest: rate vs floor", "x", 1.0, False),
    ("busy_host", "cpu_percent", "5 000 events/s: CPU", "% core", 5.0, True),
    ("real_steady", "cpu_us_per_line", "real mix, 5 000 lines/s: CPU per line", "µs", None, True),
    (
        "real_steady",
        "floor_cpu_us_per_line",
        "real mix, 5 000/s: floor CPU per line",
        "µs",
        None,
        True,
    ),
    ("real_steady", "cpu_vs_floor", "real mix, 5 000/s: CPU vs floor", "x", 1.0, True),
    ("real_burst", "lines_per_s", "real mix burst: lines/s", "/s", None, False),
    ("real_burst", "floor_lines_per_s", "real mix burst: floor lines/s", "/s", None, False),
    ("real_burst", "rate_vs_floor", "real mix burst: rate vs floor", "x", 1.0, False),
    ("busy_host", "floor_cpu_percent", "5 000 events/s: floor CPU", "% core", None, True),
    ("scale_admit", "admit_s", "admit 10 000 pending", "s", 2.0, True),
    ("scale_admit", "idle_sessions_s", "then 100 000 idle sessions", "s", None, True),
    ("scale_admit", "metrics.median_ms", "/metrics at 10 000: median", "ms", 50.0, True),
    ("scale_admit", "metrics.max_ms", "/metrics at 10 000: max", "ms", None, True),
    ("scale_admit", "status.median_ms", "/status at 10 000: median", "ms", 50.0, True),
    ("scale_admit", "status.max_ms", "/status at 10 000: max", "ms", None, True),
    ("scale_admit", "status.bytes", "/status at 10 000: size", "B", None, True),
    ("scale_admit", "bytes_per_pending_prompt", "memory per pending prompt", "B", 2048, True),
    ("stalls_queued", "p50_ms", "stalls, 200 running + 9 800 queued: p50", "ms", None, True),
    ("stalls_queued", "p99_ms", "stalls, 200 running + 9 800 queued: p99", "ms", 50.0, True),
    ("stalls_queued", "max_ms", "stalls, 200 running + 9 800 queued: max", "ms", None, True),
    ("stalls_sessions", "p50_ms", "stalls, 3 000 own sessions: p50", "ms", None, True),
    ("stalls_sessions", "p99_ms", "stalls, 3 000 own sessions: p99", "ms", 50.0, True),
    ("stalls_sessions", "max_ms", "stalls, 3 000 own sessions: max", "ms", None, True),
    ("many_servers", "cpu_percent", "20 servers x 100/s, 5 000 pending: CPU", "% core", 10.0, True),
    ("many_servers", "floor_cpu_percent", "20 servers x 100/s: floor CPU", "% core", None, True),
    ("many_servers", "p99_ms", "20 servers: stall p99", "ms", 50.0, True),
    ("many_servers", "max_ms", "20 servers: stall max", "ms", None, True),
]


def run_case(case: str, code_dir: Path | None) -> dict[str, Any]:
    """Run one case in a fresh process on the watchdog package in ``code_dir`` (None: this checkout)."""
    cwd = ROOT
    if code_dir is not None:
        cwd = code_dir  # holds watchdog/ (the ref's) and a link to bench/ (this one)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cases", case],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(proc.stdout)
    result["case_seconds"] = round(time.perf_counter() - started, 1)
    return result


def extract(ref: str) -> tuple[Path, str]:
    """REF's watchdog package in a temporary directory, next to a link to this bench."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "watchdog"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(tmp, filter="data")
    (tmp / "bench").symlink_to(ROOT / "bench")
    return tmp, commit


def get(result: dict[str, Any], key: str) -> Any:
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(columns: dict[str, dict[str, Any]]) -> str:
    names = list(columns)
    head = ["measure", "unit", *names, "goal"]
    rows = [head]
    for case, key, label, unit, goal, lower in ROWS:
        if not any(case in c for c in columns.values()):
            continue
        cells = []
        for name in names:
            result = columns[name].get(case, {})
            value = get(result, key)
            if value is None and "error" in result:
                value = "error"
            elif value is None and key == "admit_s" and result:
                value = result.get("admit_s_note", "-")
            cells.append(fmt(value))
        goal_text = "" if goal is None else ("≤ " if lower else "≥ ") + fmt(goal)
        rows.append([label, unit, *cells, goal_text])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[j]) if j < 2 else cell.rjust(widths[j])
                for j, cell in enumerate(row)
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    errors = [
        f"{name}/{case}: {result['error']}"
        for name, col in columns.items()
        for case, result in col.items()
        if isinstance(result, dict) and "error" in result
    ]
    return "\n".join(lines + errors)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--against", metavar="REF", help="also run on the code of this git ref")
    parser.add_argument("--name", help="results file name (default: the current commit)")
    parser.add_argument(
        "--compare", nargs="+", metavar="JSON", help="print saved results side by side"
    )
    args = parser.parse_args()
    if args.compare:
        columns: dict[str, dict[str, Any]] = {}
        for path in args.compare:
            saved = json.loads(Path(path).read_text())
            for label, col in saved["columns"].items():
                columns[f"{Path(path).stem}:{label}"] = col
        print(table(columns))
        return
    cases = args.only.split(",") if args.only else CASES
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"--only: unknown case {sorted(unknown)[0]!r}")
    head = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    versions: dict[str, Path | None] = {}
    tmp = None
    if args.against:
        tmp, commit = extract(args.against)
        versions[f"{args.against} ({commit})"] = tmp
    versions[f"this ({head})"] = None
    columns = {label: {} for label in versions}
    try:
        for case in cases:
            for label, code_dir in versions.items():
                print(f"running {case} on {label}...", file=sys.stderr, flush=True)
                columns[label][case] = run_case(case, code_dir)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp)
    print(table(columns))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name or head}.json"
    document = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load": os.getloadavg(),
        },
        "columns": columns,
    }
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nwritten to {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
