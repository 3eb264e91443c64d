"""`multi_site`: four sites on one central stack, each on a host of its own (a network
namespace, dev/netns.py) with its simulated PLCs and its edge process (`factorylm edge
--site`), reaching PostgreSQL and Temporal only through the centre's address.

Faults are injected at every site at once, round after round, each round on a PLC·metric not
used before (a new workflow each time); fault → workflow is from the moment the fault is sent
to the simulator to the drift workflow's start as Temporal recorded it. Then one site's link
to the centre is cut for two minutes while the rounds go on at the other three.

value = the fault → workflow p95 (ms) at the other sites while one is cut off; anchor = the
same p95 with every site connected, in the same run; ratio = value / anchor (1: the cut does
not disturb the others). `lost_while_cut`: poll slots of the cut site with no stored sample
once its spool has drained (goal 0). `cross_site_writes`: PLC writes run by a worker that is
not the writing site's own edge process (goal 0). Samples/s per site and in total, connected
and during the cut. Everything at the shipped defaults (detectors, spool, fsync every second)
but alarm-flood grouping, which the rounds' pace would trip (see `multi_site`).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError

from dev.bench.drift import _terminate_open, temporal_client
from dev.multi_site import MultiSite
from dev.site_plant import TANK
from factorylm.models.drift import drift_workflow_id
from factorylm.settings import Settings

SITES = ("north", "south", "east", "west")
CUT_SITE = "west"
PLCS_PER_SITE = 8
POLL_MS = 250
CUT_S = 120.0
STEP_SIGMA = 8.0
METRICS = [m["name"] for m in TANK]


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    if len(ms) < 2:
        return {"p50": round(ms[0], 1), "p95": round(ms[0], 1), "p99": round(ms[0], 1)}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1)}


async def _started_at(client: Client, workflow_id: str, timeout_s: float = 60.0) -> float:
    deadline = time.monotonic() + timeout_s
    handle = client.get_workflow_handle(workflow_id)
    while True:
        try:
            return (await handle.describe()).start_time.timestamp()
        except RPCError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"multi_site: no workflow {workflow_id} in {timeout_s:g} s"
                ) from None
            await asyncio.sleep(0.1)


async def _rounds(
    ms: MultiSite, sites: Sequence[str], combos: Sequence[tuple[int, str]]
) -> dict[str, list[float]]:
    """Per site, fault → workflow start (s) for each (PLC index, metric) round."""
    latencies: dict[str, list[float]] = {s: [] for s in sites}
    for n, (index, metric) in enumerate(combos, 1):
        plcs = {s: ms.nodes[s].plcs[index] for s in sites}
        sent = await asyncio.gather(*(ms.inject_now(s, plcs[s], metric, STEP_SIGMA) for s in sites))
        started = await asyncio.gather(
            *(_started_at(ms.client, drift_workflow_id(s, plcs[s], metric)) for s in sites)
        )
        for s, t0, t1 in zip(sites, sent, started, strict=True):
            latencies[s].append(max(t1 - t0, 0.0))
        await asyncio.gather(*(ms.clear_now(s, plcs[s]) for s in sites))
        print(f"multi_site: round {n}/{len(combos)} at {', '.join(sites)}", flush=True)
    return latencies


async def _rate(ms: MultiSite, site: str, start: float, end: float) -> float:
    return await ms.stored(site, start, end) / (end - start)


async def _cross_site_writes(ms: MultiSite, sites: Sequence[str]) -> tuple[int, int]:
    """(writes run by another site's edge, writes checked) over the tank-0 pressure responses,
    the rounds whose catalog action writes that site's valve."""
    wrong = checked = 0
    for site in sites:
        _, writer = await ms.answered(site, timeout_s=180.0)
        checked += 1
        pid = int(writer.split("@", 1)[0]) if writer else -1
        if pid not in ms.pids_of(site):
            wrong += 1
    return wrong, checked


async def multi_site(settings: Settings) -> dict[str, Any]:
    connected = [(i, m) for i in range(PLCS_PER_SITE // 2) for m in METRICS]
    while_cut = [(i, m) for i in range(PLCS_PER_SITE // 2, PLCS_PER_SITE) for m in METRICS]
    others = [s for s in SITES if s != CUT_SITE]
    with tempfile.TemporaryDirectory(prefix="flm-multi-site-") as tmp:
        async with (
            temporal_client(settings) as client,
            MultiSite(
                settings,
                client,
                SITES,
                Path(tmp),
                plcs_per_site=PLCS_PER_SITE,
                poll_ms=POLL_MS,
                # The one departure from the defaults: a fault at every site every few seconds
                # is an ISA-18.2 alarm flood by design, and from the 11th alarm in 10 minutes
                # a site's alarms would be grouped into one message instead of each starting
                # its workflow (ingest/alarms.py) — the figure would measure the flood rule.
                edge_settings={"alarm_flood_alarms": "0"},
            ) as ms,
        ):
            assert ms.net is not None
            print(f"multi_site: {len(SITES)} sites up, {PLCS_PER_SITE} PLCs each", flush=True)
            t_a = time.time()
            before = await _rounds(ms, SITES, connected)
            t_b = time.time()
            wrong, checked = await _cross_site_writes(ms, SITES)
            rates = {s: await _rate(ms, s, t_a, t_b) for s in SITES}

            cut_at = time.time()
            ms.net.cut(CUT_SITE)
            print(f"multi_site: {CUT_SITE}'s link cut for {CUT_S:g} s", flush=True)
            try:
                during = await _rounds(ms, others, while_cut)
                left = CUT_S - (time.time() - cut_at)
                if left > 0:
                    await asyncio.sleep(left)  # the cut lasts its full time
            finally:
                ms.net.restore(CUT_SITE)
            restored_at = time.time()
            rates_cut = {s: await _rate(ms, s, cut_at, restored_at) for s in others}

            async def drained() -> bool:
                state = await ms.spool_state(CUT_SITE)
                return bool(
                    state is not None
                    and state["updated_at"].timestamp() > restored_at
                    and state["spool_samples"] == 0
                )

            deadline = time.monotonic() + 300
            while not await drained():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"multi_site: {CUT_SITE}'s spool not drained in 300 s")
                await asyncio.sleep(0.5)
            drain_s = time.time() - restored_at
            lost = await ms.missing_slots(CUT_SITE, cut_at - 5, restored_at + 5)
            await _terminate_open(client, ms.queue)

    anchor = _quantiles([v for s in others for v in before[s]])["p95"]
    value = _quantiles([v for s in others for v in during[s]])["p95"]
    return {
        "bench": "multi_site",
        "value": value,
        "unit": f"ms fault → workflow p95 at the other sites while {CUT_SITE} is cut off",
        "anchor": anchor,
        "anchor_unit": "ms fault → workflow p95 at the same sites, every site connected",
        "ratio": round(value / anchor, 3) if anchor else None,
        "sites": len(SITES),
        "plcs_per_site": PLCS_PER_SITE,
        "poll_interval_ms": POLL_MS,
        "alarm_flood_alarms": 0,  # flood grouping off at the edges, see above
        "rounds": len(connected),
        "fault_to_workflow_ms": {s: _quantiles(before[s]) for s in SITES},
        "fault_to_workflow_while_cut_ms": {s: _quantiles(during[s]) for s in others},
        "samples_per_s": {s: round(r, 1) for s, r in rates.items()},
        "samples_per_s_total": round(sum(rates.values()), 1),
        "samples_per_s_while_cut": {s: round(r, 1) for s, r in rates_cut.items()},
        "cut_s": CUT_S,
        "cross_site_writes": wrong,
        "writes_checked": checked,
        "lost_while_cut": lost,
        "backfill_drain_s": round(drain_s, 1),
    }
