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
TEMPORAL_BIN=$(bash temporal/install.sh)
log "temporal CLI: $TEMPORAL_BIN"

# The venv is rebuilt only when pyproject.toml changes (its hash is the stamp).
stamp=.venv/.factorylm-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "creating .venv and installing the project (editable) with its dev tools"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
else
  log "virtualenv up to date"
fi
log "done in $(( $(date +%s) - start )) s"
