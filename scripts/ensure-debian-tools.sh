#!/usr/bin/env bash
# Installs promtool, Alertmanager and Chromium from Debian's packages when missing, leaving no
# daemon running.
#
# Idempotent: a machine that has both binaries is left alone, and only the missing package is
# installed otherwise. Debian bookworm packages (checked with `apt-cache policy`):
#   prometheus              -> /usr/bin/promtool (and /usr/bin/prometheus)
#   prometheus-alertmanager -> /usr/bin/prometheus-alertmanager (and /usr/bin/amtool)
#   chromium                -> /usr/bin/chromium (headless, for the status page's browser test)
#   faketime                -> libfaketime (the wall-clock step test runs the daemon under it)
# Both packages ship a service (systemd unit and /etc/init.d script) that the postinst starts.
# Started here it would bind :9090 / :9093 and outlive the install, so service starts are refused
# through policy-rc.d while installing, and a service that started anyway is stopped after.
set -euo pipefail

have_promtool() { command -v promtool >/dev/null 2>&1; }
have_alertmanager() {
    command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1
}

have_chromium() { command -v chromium >/dev/null 2>&1; }
LIBFAKETIME=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
have_faketime() { [[ -e ${LIBFAKETIME} ]]; }

packages=()
have_promtool || packages+=(prometheus)
have_alertmanager || packages+=(prometheus-alertmanager)
have_chromium || packages+=(chromium)
have_faketime || packages+=(faketime)

if [[ ${#packages[@]} -eq 0 ]]; then
    echo "ensure-debian-tools: promtool, alertmanager, chromium and faketime already installed" >&2
    exit 0
fi

if [[ ${EUID} -ne 0 ]]; then
    echo "ensure-debian-tools: must run as root to install: ${packages[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e ${POLICY} ]]; then
    # Exit status 101 means "action forbidden": invoke-rc.d and deb-systemd-invoke start nothing.
    printf '#!/bin/sh\nexit 101\n' >"${POLICY}"
    chmod 0755 "${POLICY}"
    own_policy=1
fi
cleanup() {
    if [[ ${own_policy} -eq 1 ]]; then
        rm -f "${POLICY}"
    fi
}
trap cleanup EXIT

apt-get update
apt-get install -y --no-install-recommends "${packages[@]}"

# A pre-existing policy-rc.d may allow starts: stop the services of the packages installed now
# (they were not installed before, so nothing of the machine's own is stopped).
for svc in "${packages[@]}"; do
    [[ ${svc} == chromium || ${svc} == faketime ]] && continue  # no service
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl stop "${svc}.service" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/${svc} ]]; then
        "/etc/init.d/${svc}" stop >/dev/null 2>&1 || true
    fi
done

have_promtool || { echo "ensure-debian-tools: promtool still missing" >&2; exit 1; }
have_alertmanager || { echo "ensure-debian-tools: alertmanager still missing" >&2; exit 1; }
have_chromium || { echo "ensure-debian-tools: chromium still missing" >&2; exit 1; }
have_faketime || { echo "ensure-debian-tools: faketime still missing" >&2; exit 1; }
promtool --version 2>&1 | head -n 1
