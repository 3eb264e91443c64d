"""The PLC-edge worker: the only process that writes to PLCs, on its own task queue.

Deploy it where the PLCs are reachable; it checks every request against its own plant file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.plc_write import PlcWriteActivities
from factorylm.plant import Plant
from factorylm.roster import approver_addresses
from factorylm.settings import Settings
from workers.registry import bind

ACTIVITIES: list[Callable[..., Any]] = [PlcWriteActivities.write_plc_setpoint]


def build_worker(
    client: Client, pool: asyncpg.Pool, plant: Plant, settings: Settings
) -> tuple[Worker, PlcWriteActivities]:
    # The roster's people may approve too (factorylm/roster.py), on any of their channels.
    writes = PlcWriteActivities(
        pool, plant, approver_addresses(settings), approval_validity_s=settings.approval_validity_s
    )
    worker = Worker(
        client,
        task_queue=settings.plc_task_queue,
        activities=bind(ACTIVITIES, [writes]),
        # One write at a time per edge worker: PLC writes are rare and must not interleave.
        max_concurrent_activities=1,
    )
    return worker, writes
