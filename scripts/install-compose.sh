#!/usr/bin/env bash
# Docker Compose v2 (the `docker compose` plugin, run standalone as `docker-compose`), built from
# the Go module proxy at a pinned version into the machine-wide cache (scripts/go-build.sh). The
# tests render docker-compose.yml with `docker-compose config`, which needs no Docker engine.
# Prints the binary's path. Usage: scripts/install-compose.sh [--path]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${COMPOSE_VERSION:-2.40.3}
MODULE=github.com/docker/compose/v2
# The version is stamped the way Compose's own build does, so `docker-compose version` names it.
exec bash scripts/go-build.sh docker-compose "$VERSION" "$MODULE" cmd \
  --ldflags "-s -w -X $MODULE/internal.Version=v$VERSION" --check version \
  --dir "compose-$VERSION" "$@"
