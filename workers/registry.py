"""Activities by reference: a worker lists the activity methods it runs (its ACTIVITIES) and
binds them to the instances that hold their dependencies. The same lists are what the
registration test compares with the activities every workflow calls, so a workflow that
calls an activity no worker of its task queue runs fails `make test`, not a plant."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def bind(
    methods: Iterable[Callable[..., Any]], instances: Iterable[object]
) -> list[Callable[..., Any]]:
    """Each unbound activity method, bound to the one instance of its class."""
    by_class = {type(i).__qualname__: i for i in instances}
    bound = []
    for method in methods:
        owner = method.__qualname__.rpartition(".")[0]
        instance = by_class.get(owner)
        if instance is None:
            raise LookupError(f"activity {method.__qualname__}: no {owner} instance on this worker")
        bound.append(getattr(instance, method.__name__))
    return bound


def activity_name(method: Callable[..., Any]) -> str:
    """The name Temporal knows the activity by (its @activity.defn name)."""
    defn = getattr(method, "__temporal_activity_definition", None)
    if defn is None:
        raise TypeError(f"{method.__qualname__} is not an activity")
    return str(defn.name)
