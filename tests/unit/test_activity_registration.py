"""Every activity a workflow calls is registered on the worker of the task queue it is sent to,
and every registered activity is called: a misspelt or unregistered activity fails here, not
at 3 am when a drift first takes that path."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import pytest

import workflows
from workers import agents, plc_edge
from workers.registry import activity_name
from workflows.conductor import ROUTES

_CALLS = {"execute_activity", "start_activity", "execute_activity_method", "start_activity_method"}
# The one call site whose activity is chosen at run time: the drift workflow's agents, each
# one of the Conductor's routes.
_DYNAMIC = {"route.activity": [r.activity for r in ROUTES.values()]}
EDGE, AGENTS = "plc-edge", "agents"


def called_activities(source: str, namespace: dict[str, Any]) -> set[tuple[str, str]]:
    """(activity name, queue) for every activity call in a workflow module's source. A call
    with `task_queue=` goes to the PLC edge (the only other queue); the rest to the agents."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "workflow"
            and node.func.attr in _CALLS
        ):
            continue
        target = ast.unparse(node.args[0])
        if isinstance(node.args[0], ast.Constant):
            raise AssertionError(f"activity by string name {target}: use the method reference")
        queue = EDGE if any(k.arg == "task_queue" for k in node.keywords) else AGENTS
        methods: list[Callable[..., Any]] = _DYNAMIC.get(target) or [eval(target, namespace)]
        found |= {(activity_name(m), queue) for m in methods}
    return found


def _workflow_modules() -> list[Any]:
    return [
        importlib.import_module(f"workflows.{m.name}")
        for m in pkgutil.iter_modules(workflows.__path__)
    ]


def _all_called() -> set[tuple[str, str]]:
    called: set[tuple[str, str]] = set()
    for module in _workflow_modules():
        assert module.__file__ is not None
        with open(module.__file__) as f:
            called |= called_activities(f.read(), vars(module))
    return called


def test_every_called_activity_is_registered_on_its_queue_and_every_registered_one_is_called() -> (
    None
):
    called = _all_called()
    registered = {(activity_name(m), AGENTS) for m in agents.ACTIVITIES} | {
        (activity_name(m), EDGE) for m in plc_edge.ACTIVITIES
    }
    assert called - registered == set(), "called but not registered on that queue"
    assert registered - called == set(), "registered but no workflow calls it"


def test_no_activity_is_listed_twice_on_a_worker() -> None:
    for listed in (agents.ACTIVITIES, plc_edge.ACTIVITIES):
        names = [activity_name(m) for m in listed]
        assert len(names) == len(set(names))


def test_the_plc_write_runs_only_on_the_edge_queue() -> None:
    called = _all_called()
    assert ("write_plc_setpoint", EDGE) in called
    assert ("write_plc_setpoint", AGENTS) not in called
    assert "write_plc_setpoint" not in {activity_name(m) for m in agents.ACTIVITIES}


def test_every_workflow_class_is_registered_on_the_agents_worker() -> None:
    defined = {
        obj
        for module in _workflow_modules()
        for obj in vars(module).values()
        if isinstance(obj, type)
        and obj.__module__ == module.__name__
        and hasattr(obj, "__temporal_workflow_definition")
    }
    assert defined == set(agents.WORKFLOWS)


def test_a_misspelt_activity_fails_the_check() -> None:
    from activities.notify import NotifyActivities

    source = "async def f():\n    await workflow.execute_activity_method(NotifyActivities.send_mesage, x)\n"
    with pytest.raises(AttributeError, match="send_mesage"):
        called_activities(source, {"NotifyActivities": NotifyActivities})


def test_an_activity_by_string_name_fails_the_check() -> None:
    source = 'async def f():\n    await workflow.execute_activity("send_message", x)\n'
    with pytest.raises(AssertionError, match="string name"):
        called_activities(source, {})


def test_an_activity_sent_to_the_wrong_queue_is_found() -> None:
    from activities.notify import NotifyActivities

    source = (
        "async def f():\n    await workflow.execute_activity_method("
        "NotifyActivities.send_message, x, task_queue=q)\n"
    )
    called = called_activities(source, {"NotifyActivities": NotifyActivities})
    registered = {(activity_name(m), EDGE) for m in plc_edge.ACTIVITIES}
    assert called - registered == {("send_message", EDGE)}
