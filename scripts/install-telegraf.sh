#!/usr/bin/env bash
# Telegraf, the Go agent a plant engineer would otherwise pick to poll Modbus/S7 into
# PostgreSQL: the benchmark peer of `factorylm bench ingest_vs_telegraf` (make bench builds it
# when missing; no test needs it). Built with only the plugins the benchmark uses, through
# Telegraf's own build tags. Prints the binary's path. Usage: scripts/install-telegraf.sh [--path]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${TELEGRAF_VERSION:-1.37.2}
MODULE=github.com/influxdata/telegraf
exec bash scripts/go-build.sh telegraf "$VERSION" "$MODULE" cmd/telegraf \
  --tags "custom,inputs.modbus,inputs.s7comm,outputs.postgresql" \
  --ldflags "-s -w -X $MODULE/internal.Version=$VERSION" "$@"
