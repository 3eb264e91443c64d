"""PostgreSQL NOTIFY channels between the product's processes. They live in the kernel because
both ends do: the health monitor (an activity) asks the ingest to restart a collector, and the
baseline activity tells the ingest to reload its baselines."""

from __future__ import annotations

# `NOTIFY collector_restart, '<plc id>'`: restart that PLC's collector.
RESTART_CHANNEL = "collector_restart"
# `NOTIFY baselines_updated`: the `baselines` table has new rows; reload them.
BASELINES_CHANNEL = "baselines_updated"
