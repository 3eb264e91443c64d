#!/usr/bin/env bash
# Builds Docker Compose v2 (the `docker compose` plugin, run standalone as `docker-compose`)
# from the Go module proxy at a pinned version, into the machine-wide cache that every checkout
# on this machine reuses. The tests render docker-compose.yml with `docker-compose config`,
# which needs no Docker engine. No prebuilt binary is fetched.
# Prints the binary's path on stdout; idempotent (a cached binary returns at once).
# Usage: scripts/install-compose.sh [--path]
set -euo pipefail

VERSION=${COMPOSE_VERSION:-2.40.3}
CACHE_DIR=${FACTORYLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/factorylm}
TARGET_DIR="$CACHE_DIR/compose-$VERSION"
BIN="$TARGET_DIR/docker-compose"
MODULE=github.com/docker/compose/v2

log() { printf '[install-compose] %s\n' "$*" >&2; }

# --path: where the binary is (or would be), without building it; the tests fail with it.
if [ "${1:-}" = "--path" ]; then
  echo "$BIN"
  exit 0
fi

if [ -x "$BIN" ] && "$BIN" version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "Go toolchain not found: install Go (https://go.dev/doc/install) or the golang-go package"; exit 1; }

mkdir -p "$TARGET_DIR"
tmp="$TARGET_DIR.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "building Docker Compose v$VERSION from the Go module proxy (first time only; several minutes on 2 cores)"
export CGO_ENABLED=0
# The version is stamped the way Compose's own build does, so `docker-compose version` names it.
ldflags="-s -w -X $MODULE/internal.Version=v$VERSION"
# Compose's go.mod has replace and exclude directives, which `go install module@version`
# refuses: download the module and build inside it, with its own go.mod and go.sum.
dir=$(go mod download -json "$MODULE@v$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -n "$dir" ] || { log "could not download $MODULE@v$VERSION"; exit 1; }
(cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$tmp/docker-compose" ./cmd)
mv "$tmp/docker-compose" "$BIN"
"$BIN" version >&2
echo "$BIN"
