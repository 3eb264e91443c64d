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
from factorylm.roster import approver_addresses, site_settings
from factorylm.settings import Settings
from workers.registry import bind

ACTIVITIES: list[Callable[..., Any]] = [PlcWriteActivities.write_plc_setpoint]


def build_worker(
    client: Client,
    pool: asyncpg.Pool,
    plant: Plant,
    settings: Settings,
    site: str | None = None,
) -> tuple[Worker, PlcWriteActivities]:
    """The edge worker of one site (the plant's only one if unnamed): that site's PLCs and
    catalog only, on its own queue, with that site's approvers (a site may name its own;
    factorylm/roster.py)."""
    site = site or plant.only_site.name
    own = plant.for_site(site)
    own_settings = site_settings(settings, own.only_site)
    # The roster's people may approve too (factorylm/roster.py), on any of their channels.
    writes = PlcWriteActivities(
        pool,
        own,
        approver_addresses(own_settings),
        approval_validity_s=settings.approval_validity_s,
    )
    worker = Worker(
        client,
        task_queue=settings.edge_queue(site),
        activities=bind(ACTIVITIES, [writes]),
        # One write at a time per edge worker: PLC writes are rare and must not interleave.
        max_concurrent_activities=1,
    )
    return worker, writes
