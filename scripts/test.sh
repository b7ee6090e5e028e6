#!/usr/bin/env bash
# Installs everything the tests need, then runs lint, type checks and the whole test suite.
#
# What it installs, each step a no-op when already done:
#   .venv/                    the project and its test extras (editable)
#   .cache/opencode/          opencode-ai@1.18.33 from npm, for the end-to-end tests
#   promtool, alertmanager    Debian packages, for the rules and Alertmanager tests (needs root)
#   systemd-analyze           Debian package systemd, for the unit file checks (needs root)
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k tracker`. Tests run in two
# pytest-xdist workers (each shares one warmed opencode server between the end-to-end tests that
# allow it); PYTEST_WORKERS=0 runs them in one process. Hypothesis uses its `ci` profile unless
# HYPOTHESIS_PROFILE says otherwise; a failed end-to-end test leaves its logs in test-logs/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

bash scripts/install-opencode.sh
bash scripts/ensure-debian-tools.sh
if ! command -v systemd-analyze >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd
fi

echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy --strict" && .venv/bin/mypy
echo "== pytest"
status=0
HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci} .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" \
    --durations=15 "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit $status
