#!/usr/bin/env bash
# The Temporal CLI, which embeds a full Temporal server with SQLite persistence and the Web UI
# (`temporal server start-dev`), built from the Go module proxy at a pinned version into the
# machine-wide cache that every checkout on this machine reuses (scripts/go-build.sh).
# Prints the binary's path on stdout; idempotent (a cached binary returns at once).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/go-build.sh temporal "${TEMPORAL_CLI_VERSION:-1.5.1}" \
  github.com/temporalio/cli cmd/temporal "$@"
