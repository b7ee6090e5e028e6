#!/usr/bin/env bash
# Installs the pinned `opencode serve` used by the e2e tests under <repo>/.cache/opencode (idempotent).
set -euo pipefail

VERSION="1.18.33"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.cache/opencode"
BIN="$PREFIX/node_modules/opencode-linux-x64/bin/opencode"

installed_version() {
    # A broken or half-installed binary must count as "not installed", not abort the script.
    if [ -x "$BIN" ]; then
        "$BIN" --version 2>/dev/null | tr -d '[:space:]' || true
    fi
}

if [ "$(installed_version)" != "$VERSION" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-opencode: npm is required (apt-get install nodejs npm)" >&2
        exit 1
    fi
    # Start from an empty prefix: npm leaves a stale or hand-made opencode-linux-x64 folder
    # "removed" without reinstalling it, so patching an existing tree is unreliable.
    rm -rf "$PREFIX"
    mkdir -p "$PREFIX"
    # The platform binary arrives through opencode-ai's optionalDependencies, so npm 11's
    # "install scripts not yet covered by allowScripts" warning about its postinstall is harmless.
    # npm's chatter goes to stderr so that `BIN=$(scripts/install-opencode.sh)` gets only the path.
    npm install --prefix "$PREFIX" --save-exact --no-audit --no-fund "opencode-ai@$VERSION" >&2
    got="$(installed_version)"
    if [ "$got" != "$VERSION" ]; then
        echo "install-opencode: expected opencode $VERSION at $BIN, got '${got:-nothing}'" >&2
        exit 1
    fi
fi

echo "$BIN"
