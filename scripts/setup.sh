#!/usr/bin/env bash
# One idempotent setup for every make target: system packages and PostgreSQL extensions,
# the Temporal CLI, and the project's virtualenv. First run: minutes. Cached run: seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }
start=$(date +%s)

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { log "Python 3.11 is required (found $("$PYTHON" --version 2>&1))"; exit 1; }

bash scripts/install-postgres.sh
# Debian packages the product runs or tests with, each installed only when missing. The
# package lists are refreshed once, and only when something is to be installed.
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=""
need() {  # need PACKAGE COMMAND WHY
  if command -v "$2" >/dev/null 2>&1 || [ -x "/usr/sbin/$2" ]; then return 0; fi
  log "installing $1 ($3)"
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  $SUDO apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}
need socat socat "links the simulated Modbus RTU device to a pty pair"
need bubblewrap bwrap "the sandbox the Monkey runs success checks in"
# dev/mosquitto.py runs the broker as a child process with its own config; no service starts.
need mosquitto mosquitto "the MQTT broker of the demo, the tests and the benchmarks"
# Playwright drives Debian's Chromium in tests/browser/; its own browser download is not used.
need chromium chromium "the browser the plant board's tests drive"
# The multi-site tests build their sites as network namespaces (dev/netns.py: ip netns, veth).
need iproute2 ip "the network namespaces the multi-site tests run their sites in"
# The plant board's charting library (package.json, package-lock.json), served by the API.
# Reinstalled only when package-lock.json changes (its hash is the stamp), as the venv below.
npm_stamp=node_modules/.factorylm-stamp
npm_want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$npm_want" ]; then
  command -v npm >/dev/null 2>&1 || { log "npm (node 20) is required for the plant board"; exit 1; }
  log "installing the plant board's npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$npm_want" > "$npm_stamp"
else
  log "npm packages up to date"
fi
TEMPORAL_BIN=$(bash temporal/install.sh)
log "temporal CLI: $TEMPORAL_BIN"
COMPOSE_BIN=$(bash scripts/install-compose.sh); log "compose renderer: $COMPOSE_BIN"  # renders docker-compose.yml in the tests

# The venv is rebuilt only when pyproject.toml changes (its hash is the stamp).
stamp=.venv/.factorylm-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "creating .venv and installing the project (editable) with its dev tools and the simulator extra"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev,sim]'
  echo "$want" > "$stamp"
else
  log "virtualenv up to date"
fi
log "done in $(( $(date +%s) - start )) s"
