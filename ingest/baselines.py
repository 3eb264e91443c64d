"""Keeps the drift detector's baselines current: loads the latest at start, and again whenever
the baseline workflow announces new ones (PostgreSQL LISTEN/NOTIFY), without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg
from pydantic import ValidationError

from factorylm.channels import BASELINES_CHANNEL
from factorylm.plant import Baseline

log = logging.getLogger(__name__)

BaselineSink = Callable[[str, str, Baseline], None]

# The latest usable baseline per metric. A row with a NaN or infinite mean or std (written
# before samples were checked, or by hand) is passed over for the one before it. In
# PostgreSQL NaN sorts above every number, so `< 'Infinity'` leaves out NaN and ±inf alike.
_LATEST = """
SELECT DISTINCT ON (plc_id, metric) plc_id, metric, mean, std, phi
FROM baselines
WHERE abs(mean) < 'Infinity'::float8 AND std > 0 AND std < 'Infinity'::float8
ORDER BY plc_id, metric, computed_at DESC, id DESC
"""


async def load_latest(conn: asyncpg.Connection) -> dict[tuple[str, str], Baseline]:
    latest: dict[tuple[str, str], Baseline] = {}
    for r in await conn.fetch(_LATEST):
        try:
            latest[(r["plc_id"], r["metric"])] = Baseline(
                mean=r["mean"], std=r["std"], phi=r["phi"]
            )
        except ValidationError as exc:
            # One bad row must not cost every other metric its baseline.
            log.warning("baseline of %s/%s not usable: %s", r["plc_id"], r["metric"], exc)
    return latest


class BaselineLoader:
    def __init__(self, dsn: str, sink: BaselineSink) -> None:
        self._dsn = dsn
        self._sink = sink
        self._conn: asyncpg.Connection | None = None
        self._reload = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.loads = 0

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._dsn)
        await self._conn.add_listener(BASELINES_CHANNEL, self._on_notify)
        await self.reload()
        self._task = asyncio.create_task(self._run(), name="baseline-loader")

    def _on_notify(self, *_: object) -> None:
        self._reload.set()

    async def _run(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            try:
                await self.reload()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("could not reload baselines (%s); keeping the current ones", exc)

    async def reload(self) -> None:
        assert self._conn is not None
        latest = await load_latest(self._conn)
        for (plc_id, metric), baseline in latest.items():
            self._sink(plc_id, metric, baseline)
        self.loads += 1
        log.info("loaded %d baselines", len(latest))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
