"""PostgreSQL NOTIFY channels between the product's processes. They live in the kernel because
both ends do: the health monitor (an activity) asks the ingest to restart a collector, and the
baseline activity tells the ingest to reload its baselines."""

from __future__ import annotations

# `NOTIFY collector_restart, '<plc id>'`: restart that PLC's collector.
RESTART_CHANNEL = "collector_restart"
# `NOTIFY baselines_updated`: the `baselines` table has new rows; reload them.
BASELINES_CHANNEL = "baselines_updated"
# `NOTIFY samples_written, '<rows> <oldest sample's time, epoch seconds>'`: the ingest's writer
# committed a batch; the API's plant board reads the new points once per API process for all
# its browsers (api/board.py), from the oldest sample's second on.
SAMPLES_CHANNEL = "samples_written"
# `NOTIFY alarm_shelves, '<alarm code>'`: a person shelved or unshelved that alarm (a reply,
# factorylm/alarms.py); the ingest reloads its open shelves.
SHELVES_CHANNEL = "alarm_shelves"
# `NOTIFY audit_events, '{"table": …, "op": …, "key": …}'`: a row of an audit table was written
# (a trigger, migration 0020): messages, PLC writes, work orders, the alarm journal, alarms
# handed to their workflow, approvals answered. The demo's narrator listens.
AUDIT_CHANNEL = "audit_events"
