#!/usr/bin/env python3
"""Run the test suite N times with K CPU hogs beside it; report each run's result and time.

    python3 scripts/stress.py --runs 3 --hogs 2                  # bash scripts/test.sh, here
    python3 scripts/stress.py --runs 3 --hogs 2 --fresh-clone    # each run in a new clone of HEAD
    python3 scripts/stress.py --runs 5 --hogs 2 -- -m e2e        # extra arguments go to pytest

A hog is `python3 -c 'while True: pass'`: one busy core each, for the whole series. The script
kills only what it started (the hogs and each run's process group), by PID, also on Ctrl-C. Each
run's output goes to a log file named in the report; the report says, per run, the exit code,
pytest's summary line, the wall time, and how much CPU the hogs got meanwhile (so a report shows
they were really running). It exits 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^=+ (.*\b(passed|failed|error|errors|no tests ran)\b.*) =+$")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    number: int
    exit_code: int
    seconds: float
    summary: str
    hog_cpu_seconds: list[float]
    commit: str
    log: str


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(count)
    ]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this script started (its leader has proc.pid), also what is
    left of it after the leader exited (a server a failed run did not stop)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def clone(into: Path) -> Path:
    """A fresh clone of this checkout's HEAD, as CI makes one."""
    work = into / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(work)], check=True)  # noqa: S603, S607
    return work


def one_run(
    number: int, command: list[str], fresh: bool, logs: Path, hogs: list[subprocess.Popen[bytes]]
) -> Run:
    log = logs / f"run-{number}.log"
    with tempfile.TemporaryDirectory(prefix="stress-") as scratch:
        cwd = clone(Path(scratch)) if fresh else ROOT
        before = [cpu_seconds(h.pid) for h in hogs]
        started = time.monotonic()
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - the suite's own command, arguments made here
                command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                code = proc.wait()
            finally:
                stop(proc)
        seconds = time.monotonic() - started
        hog_cpu = [cpu_seconds(h.pid) - b for h, b in zip(hogs, before, strict=True)]
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    summary = ""
    for line in log.read_text(errors="replace").splitlines():
        match = SUMMARY.match(line.strip())
        if match:
            summary = match.group(1)
    hog_cpu_seconds = [round(c, 1) for c in hog_cpu]
    return Run(number, code, round(seconds, 1), summary, hog_cpu_seconds, commit, str(log))


def _stop_series(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="how many runs (default 3)")
    parser.add_argument("--hogs", type=int, default=2, help="CPU hogs beside them (default 2)")
    parser.add_argument(
        "--fresh-clone", action="store_true", help="each run in a new clone of HEAD, as CI does"
    )
    parser.add_argument("--logs", type=Path, help="folder for run logs (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("pytest_args", nargs="*", help="after --: extra arguments for pytest")
    args = parser.parse_args()
    if args.runs < 1 or args.hogs < 0:
        parser.error("--runs must be at least 1 and --hogs at least 0")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="opencode-watchdog-stress-"))
    logs.mkdir(parents=True, exist_ok=True)
    command = ["bash", "scripts/test.sh", *args.pytest_args]
    print(f"{args.runs} runs of `{' '.join(command)}` with {args.hogs} CPU hogs; logs in {logs}")
    # SIGTERM (and SIGINT, which a shell ignores in background jobs) ends the series cleanly.
    signal.signal(signal.SIGTERM, _stop_series)
    signal.signal(signal.SIGINT, _stop_series)
    hogs = start_hogs(args.hogs)
    runs: list[Run] = []
    try:
        for number in range(1, args.runs + 1):
            run = one_run(number, command, args.fresh_clone, logs, hogs)
            runs.append(run)
            verdict = "pass" if run.exit_code == 0 else f"FAIL (exit {run.exit_code})"
            print(
                f"run {number}: {verdict} in {run.seconds:.0f} s"
                f" ({run.seconds / 60:.1f} min); {run.summary or 'no pytest summary'};"
                f" hogs' CPU {run.hog_cpu_seconds} s; at {run.commit}; log {run.log}",
                flush=True,
            )
    finally:
        for hog in hogs:
            stop(hog)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    passed = sum(r.exit_code == 0 for r in runs)
    print(f"{passed} of {len(runs)} runs passed")
    return 0 if passed == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
