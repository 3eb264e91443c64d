"""The demo's scenarios: the one registry `factorylm demo --scenario NAME` reads.

Add a scenario by writing its module (an `async def run_…(demo, say) -> dict` that returns the
summary printed as the last JSON line, with `"status": "completed"` on success) and one entry
here. Entries name their function as "module:function" so that building the CLI's parser does
not import every scenario (and through them Temporal, the simulator and the fakes).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from dev.demo.environment import Demo

ScenarioFn = Callable[["Demo", Callable[[str], None]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class DemoScenario:
    help: str
    target: str  # "module:function"


SCENARIOS: dict[str, DemoScenario] = {
    "drift": DemoScenario(
        "vibration steps 6σ; WhatsApp approval; verified write; work order",
        "dev.demo.drift:run_drift_scenario",
    ),
    "photo": DemoScenario(
        "a technician's photo becomes a work order with the photo attached",
        "dev.demo.photo:run_photo_scenario",
    ),
    "monkey": DemoScenario(
        "the Monkey works cards off a local Trello board",
        "dev.demo.monkey:run_monkey_scenario",
    ),
    "health": DemoScenario(
        "a PLC goes silent; the health monitor alerts and restarts its collector",
        "dev.demo.health:run_health_scenario",
    ),
}
DEFAULT_SCENARIO = "drift"


def scenario(name: str) -> ScenarioFn:
    """The scenario's function; KeyError names the known ones."""
    try:
        entry = SCENARIOS[name]
    except KeyError:
        raise KeyError(f"no demo scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    module, _, func = entry.target.partition(":")
    return cast(ScenarioFn, getattr(importlib.import_module(module), func))
