"""The data lifecycle: raw samples rolled up into 1-minute rows, then dropped after retention."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from factorylm.models.base import Model


class DataLifecycleInput(Model):
    # Raw samples older than this go (by whole day-chunks); never less than one day.
    raw_retention_days: float = Field(default=14.0, ge=1.0)
    # Minutes this far behind the watermark are rolled up again: samples that arrived late (a
    # collector's backlog, an edge's store-and-forward) still land in their minute.
    lookback_minutes: int = Field(default=120, ge=0)


class RollUpInput(Model):
    until: datetime
    lookback_minutes: int = Field(ge=0)
    # One transaction rolls up at most this much: a first run over weeks of history is many
    # short transactions, each heartbeated, not one that holds locks for an hour.
    span_hours: float = Field(default=6.0, gt=0)


class RollUpResult(Model):
    rolled_up_to: datetime | None
    steps: int
    # The oldest minute re-rolled in this run because samples older than the lookback arrived
    # late (an edge's backfill after a long outage); None when there were none. Defaults keep
    # histories recorded before the field replaying.
    rerolled_from: datetime | None = None
    rerolled_minutes: int = 0


class DropRawInput(Model):
    raw_retention_days: float = Field(ge=1.0)
    lookback_minutes: int = Field(ge=0)


class DataLifecycleResult(Model):
    rolled_up_to: datetime | None
    rollup_steps: int
    chunks_dropped: int
    rerolled_from: datetime | None = None
    rerolled_minutes: int = 0
