#!/usr/bin/env bash
# Installs PostgreSQL 15 with TimescaleDB (Apache-2 edition) and pgvector, built from Debian
# trixie *source* packages against bookworm's PostgreSQL 15 (README.md, "Two commands"). Binary trixie
# packages are never installed: the trixie entry is deb-src only.
# Idempotent: exits in well under a second when both extensions are already installed.
set -euo pipefail

PG_MAJOR=15
PGVECTOR_VERSION=${PGVECTOR_VERSION:-0.8.0}
TIMESCALEDB_VERSION=${TIMESCALEDB_VERSION:-2.19.3}
CACHE_DIR=${FACTORYLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/factorylm}
BUILD_DIR="$CACHE_DIR/pg-extensions"
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
EXT_DIR=/usr/share/postgresql/$PG_MAJOR/extension

log() { printf '[install-postgres] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "not root and no sudo: cannot install system packages"; exit 1; fi
fi

have_extensions() {
  [ -x "$PG_CONFIG" ] \
    && [ -f "$EXT_DIR/vector--$PGVECTOR_VERSION.sql" ] \
    && [ -f "$EXT_DIR/timescaledb--$TIMESCALEDB_VERSION.sql" ] \
    && [ -x /usr/lib/postgresql/$PG_MAJOR/bin/initdb ]
}

if have_extensions; then
  log "PostgreSQL $PG_MAJOR with pgvector $PGVECTOR_VERSION and timescaledb $TIMESCALEDB_VERSION: already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
TRIXIE_SRC=/etc/apt/sources.list.d/factorylm-trixie-src.sources
if [ ! -f "$TRIXIE_SRC" ]; then
  log "adding a deb-src (source only) entry for trixie"
  $SUDO tee "$TRIXIE_SRC" >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
log "apt-get update"
$SUDO apt-get update -qq
log "installing build dependencies and PostgreSQL $PG_MAJOR"
$SUDO apt-get install -y -qq --no-install-recommends \
  postgresql-$PG_MAJOR postgresql-client-$PG_MAJOR postgresql-server-dev-$PG_MAJOR \
  cmake libssl-dev build-essential dpkg-dev socat >/dev/null

mkdir -p "$BUILD_DIR"
cd "$BUILD_DIR"

fetch_source() { # name version -> prints the unpacked directory
  local name=$1 version=$2
  local dir
  dir=$(find . -maxdepth 1 -type d -name "$name-$version*" | head -n1)
  if [ -z "$dir" ]; then
    log "apt-get source $name=$version (trixie)"
    apt-get source --download-only -qq "$name/trixie" >/dev/null 2>&1 || apt-get source --download-only -qq "$name" >/dev/null
    dpkg-source -x --no-check "$(ls ${name}_${version}*.dsc | head -n1)" >/dev/null
    dir=$(find . -maxdepth 1 -type d -name "$name-$version*" | head -n1)
  fi
  [ -n "$dir" ] || { log "source for $name $version not found in trixie"; exit 1; }
  echo "$dir"
}

# A build's output goes to its log; on failure the log's tail is shown. (timescaledb's
# CMake asks git for a version and, in an unpacked source package, git answers "fatal: not a
# git repository" several times: noise on a fresh machine, not an error.)
built() { # name log-file command... : runs the command with its output in the log
  local name=$1 logfile=$2; shift 2
  if ! "$@" >"$logfile" 2>&1; then
    log "building $name failed; the end of $logfile:"
    tail -n 30 "$logfile" >&2
    exit 1
  fi
}

if [ ! -f "$EXT_DIR/vector--$PGVECTOR_VERSION.sql" ]; then
  src=$(fetch_source pgvector "$PGVECTOR_VERSION")
  log "building pgvector $PGVECTOR_VERSION"
  built pgvector "$BUILD_DIR/pgvector-build.log" \
    bash -c "make -s -C '$src' PG_CONFIG='$PG_CONFIG' OPTFLAGS='' && $SUDO make -s -C '$src' PG_CONFIG='$PG_CONFIG' install"
fi

if [ ! -f "$EXT_DIR/timescaledb--$TIMESCALEDB_VERSION.sql" ]; then
  src=$(fetch_source timescaledb "$TIMESCALEDB_VERSION")
  log "building timescaledb $TIMESCALEDB_VERSION (Apache-2 edition)"
  built timescaledb "$BUILD_DIR/timescaledb-build.log" bash -c "cd '$src' && rm -rf build \
    && ./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
         -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG='$PG_CONFIG' \
    && make -s -C build -j$(nproc) && $SUDO make -s -C build install"
fi

have_extensions || { log "extensions still missing after the build"; exit 1; }
log "PostgreSQL $PG_MAJOR with pgvector $PGVECTOR_VERSION and timescaledb $TIMESCALEDB_VERSION installed"
