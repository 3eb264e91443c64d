#!/usr/bin/env bash
# Builds a Go program from the Go module proxy at a pinned version into the machine-wide cache
# that every checkout on this machine reuses, and prints the binary's path on stdout. No
# prebuilt binary is fetched. Idempotent: a cached binary that answers its check returns at once.
#
# Usage: scripts/go-build.sh NAME VERSION MODULE PACKAGE [--tags TAGS] [--ldflags FLAGS]
#                            [--check ARG] [--dir DIR] [--path]
#   --path   print where the binary is (or would be) without building it
#   --check  the argument that makes the binary print its version (default: --version)
#   --dir    the cache directory's name (default: NAME-VERSION)
set -euo pipefail

NAME=$1 VERSION=$2 MODULE=$3 PACKAGE=$4
shift 4
TAGS="" LDFLAGS="-s -w" CHECK="--version" ONLY_PATH="" DIR="$NAME-$VERSION"
while [ $# -gt 0 ]; do
  case "$1" in
    --tags) TAGS=$2; shift 2 ;;
    --ldflags) LDFLAGS=$2; shift 2 ;;
    --check) CHECK=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --path) ONLY_PATH=1; shift ;;
    *) echo "go-build.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

CACHE_DIR=${FACTORYLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/factorylm}
TARGET_DIR="$CACHE_DIR/$DIR"
BIN="$TARGET_DIR/$NAME"

log() { printf '[build %s] %s\n' "$NAME" "$*" >&2; }

if [ -n "$ONLY_PATH" ]; then
  echo "$BIN"
  exit 0
fi
if [ -x "$BIN" ] && "$BIN" "$CHECK" >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "Go toolchain not found: install Go (https://go.dev/doc/install) or the golang-go package"; exit 1; }

mkdir -p "$TARGET_DIR"
tmp="$TARGET_DIR.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "building $MODULE v$VERSION from the Go module proxy (first time only; minutes on 2 cores)"
export CGO_ENABLED=0
# Built inside the downloaded module, with its own go.mod and go.sum: `go install module@version`
# refuses modules whose go.mod has replace or exclude directives, as several of these have.
dir=$(go mod download -json "$MODULE@v$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -n "$dir" ] || { log "could not download $MODULE@v$VERSION"; exit 1; }
(cd "$dir" && go build -trimpath -tags "$TAGS" -ldflags "$LDFLAGS" -o "$tmp/$NAME" "./$PACKAGE")
mv "$tmp/$NAME" "$BIN"
"$BIN" "$CHECK" >&2
echo "$BIN"
