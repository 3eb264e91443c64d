"""Two sites on one central stack, each on a host of its own (Linux network namespaces,
dev/netns.py): each site's simulated PLCs and its edge process (`factorylm edge --site`) in
its namespace, reaching PostgreSQL and Temporal only through the centre's address.

Faults injected at both sites at once are each answered by that site's own edge process;
cutting one site's link to the centre for two minutes loses none of its samples (its spool
holds them, then backfills) and does not disturb the other site, whose next fault is answered
during the cut.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from dev.multi_site import MultiSite
from dev.site_plant import ACTION
from factorylm.settings import Settings
from helpers import until

CUT_S = 120.0


@pytest.fixture
async def sites(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[MultiSite]:
    async with MultiSite(settings, client, ["north", "south"], tmp_path) as rig:
        yield rig


async def test_each_sites_faults_are_answered_by_its_own_edge_and_a_cut_site_loses_nothing(
    sites: MultiSite,
) -> None:
    # A site's PLCs answer on its own loopback only (dev/netns.py's own tests prove it): the
    # centre cannot reach them, so every write below went through that site's edge.
    assert sites.net is not None
    # Faults at both sites at once.
    await sites.fault("north")
    await sites.fault("south")
    for site in ("north", "south"):
        result, writer = await sites.answered(site)
        assert result.action == ACTION and result.status == "completed"
        assert result.value_read_back == 0
        pid = int(writer.split("@", 1)[0])
        assert pid in sites.pids_of(site), f"{site}'s write ran in {writer}, not its edge"
        other = "south" if site == "north" else "north"
        assert pid not in sites.pids_of(other)
        await sites.clear(site)

    assert sites.pool is not None
    writes = await sites.pool.fetch(
        "SELECT workflow_id, plc_id, status FROM plc_writes WHERE workflow_id = ANY($1)",
        [sites.workflow_id("north"), sites.workflow_id("south")],
    )
    assert sorted((r["plc_id"], r["status"]) for r in writes) == [
        (f"north-{sites.tag}tank-0", "verified"),
        (f"south-{sites.tag}tank-0", "verified"),
    ]

    # South's link to the centre is cut for two minutes.
    cut_at = time.time()
    sites.net.cut("south")
    try:
        # South's edge notices and spools; north goes on: its next fault is answered now.
        await until(
            "south spooling",
            lambda: _spooling(sites),
            timeout_s=60.0,
        )
        await sites.fault("north")
        result, writer = await sites.answered("north", since=cut_at, timeout_s=90.0)
        assert result.status == "completed"
        assert int(writer.split("@", 1)[0]) in sites.pids_of("north")
        await sites.clear("north")
        remaining = CUT_S - (time.time() - cut_at)
        if remaining > 0:
            await until("the end of the cut", lambda: time.time() - cut_at >= CUT_S,
                        timeout_s=remaining + 5)  # fmt: skip
    finally:
        sites.net.restore("south")
    restored_at = time.time()

    # Back: south's spool drains into PostgreSQL.
    await until("south's spool drained", lambda: _drained(sites, restored_at), timeout_s=240.0)
    lost = await sites.missing_slots("south", cut_at - 5, restored_at + 5)
    assert lost == 0
    assert await sites.missing_slots("north", cut_at - 5, restored_at + 5) == 0
    # Every poll of the cut is there: 3 metrics × one sample per 250 ms, give or take the
    # first and last poll.
    stored = await sites.stored("south", cut_at, cut_at + CUT_S)
    assert abs(stored - 3 * CUT_S / 0.25) <= 6
    state = await sites.spool_state("south")
    assert state is not None and state["spool_dropped"] == 0 and state["samples_dropped"] == 0
    assert state["backfilled"] >= 3 * CUT_S / 0.25 * 0.9


async def _spooling(sites: MultiSite) -> bool:
    # The status row is written by the edge over the cut link: it can't say so until later.
    # The spool directory, on the edge's own disk, says it now.
    spool = sites.workdir / "spool" / "south"
    return any(p.stat().st_size > 0 for p in spool.glob("*.seg")) if spool.is_dir() else False


async def _drained(sites: MultiSite, since: float) -> bool:
    state = await sites.spool_state("south")
    return (
        state is not None
        and state["updated_at"].timestamp() > since
        and state["spool_samples"] == 0
        and state["backfilled"] > 0
    )
