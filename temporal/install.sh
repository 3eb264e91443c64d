#!/usr/bin/env bash
# Builds the Temporal CLI (which embeds a full Temporal server with SQLite persistence and the
# Web UI: `temporal server start-dev`) from the Go module proxy at a pinned version, into a
# machine-wide cache that every checkout on this machine reuses. No prebuilt binary is fetched.
# Prints the binary's path on stdout; idempotent (a cached binary returns at once).
set -euo pipefail

VERSION=${TEMPORAL_CLI_VERSION:-1.5.1}
CACHE_DIR=${FACTORYLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/factorylm}
TARGET_DIR="$CACHE_DIR/temporal-$VERSION"
BIN="$TARGET_DIR/temporal"
MODULE=github.com/temporalio/cli

log() { printf '[install-temporal] %s\n' "$*" >&2; }

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "Go toolchain not found: install Go (https://go.dev/doc/install) or the golang-go package"; exit 1; }

mkdir -p "$TARGET_DIR"
tmp="$TARGET_DIR.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "building the Temporal CLI v$VERSION from the Go module proxy (first time only; a few minutes on 2 cores)"
export CGO_ENABLED=0
if ! GOBIN="$tmp" go install "$MODULE/cmd/temporal@v$VERSION" 2>"$tmp/go-install.log"; then
  if grep -q "replace directives" "$tmp/go-install.log"; then
    # go install refuses modules whose go.mod has replace directives; build inside the module.
    log "go install refused (replace directives); building inside the downloaded module"
    dir=$(go mod download -json "$MODULE@v$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    (cd "$dir" && go build -o "$tmp/temporal" ./cmd/temporal)
  else
    cat "$tmp/go-install.log" >&2
    exit 1
  fi
fi
mv "$tmp/temporal" "$BIN"
"$BIN" --version >&2
echo "$BIN"
