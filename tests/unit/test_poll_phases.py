"""Poll phases: PLCs that share an interval start their cycles spread across it."""

from __future__ import annotations

import itertools
from typing import Any

from factorylm.plant import Plant
from ingest.manager import spread_phases


def _plant(intervals: list[int]) -> Plant:
    plcs: list[dict[str, Any]] = [
        {
            "id": f"mb-{i:03d}",
            "vendor": "generic_modbus",
            "protocol": "modbus_tcp",
            "port": 15000 + i,
            "poll_interval_ms": ms,
            "metrics": [{"name": "r0", "register": 0, "type": "u16"}],
        }
        for i, ms in enumerate(intervals)
    ]
    return Plant.model_validate({"name": "phases", "plcs": plcs})


def test_plcs_sharing_an_interval_are_spread_evenly_across_it() -> None:
    phases = spread_phases(_plant([1000] * 200))
    ordered = sorted(phases.values())
    assert len(set(ordered)) == 200
    assert 0 <= ordered[0] and ordered[-1] < 1.0
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert min(gaps) > 0.0049 and max(gaps) < 0.0051


def test_groups_of_different_intervals_never_start_on_the_same_instant() -> None:
    phases = spread_phases(_plant([100, 100, 1000, 1000, 1000, 1000]))
    fast = [phases["mb-000"], phases["mb-001"]]
    slow = [phases[f"mb-{i:03d}"] for i in range(2, 6)]
    assert fast == [0.0, 0.05]
    # Every start of a 1 s PLC, folded into the 100 ms cycle, falls between the fast ones.
    for phase in slow:
        assert all(abs(phase % 0.1 - f) > 0.001 for f in fast)
        assert 0 <= phase < 1.0


def test_single_plcs_at_multiples_of_an_interval_interleave() -> None:
    phases = spread_phases(_plant([100, 200, 400]))
    # Folded into the 100 ms cycle, the three start at different instants.
    folded = sorted(round(p % 0.1, 6) for p in phases.values())
    assert len(set(folded)) == 3, phases


def test_the_bench_plant_never_starts_a_fast_plc_with_a_slow_one() -> None:
    phases = spread_phases(_plant([100, 100] + [1000] * 200))
    fast = {round(phases[f"mb-{i:03d}"], 6) for i in range(2)}
    slow = {round(phases[f"mb-{i:03d}"] % 0.1, 6) for i in range(2, 202)}
    assert fast == {0.0, 0.05} and not fast & slow


def test_a_single_plc_starts_at_the_top_of_its_interval() -> None:
    assert spread_phases(_plant([250])) == {"mb-000": 0.0}
