"""The extension points' registries are complete: every protocol has its driver and its
simulated peer, every demo scenario and CLI command resolves, and the plant file's checks come
from the protocol registry."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from app.commands import commands
from dev.demo.scenarios import SCENARIOS, scenario
from dev.simulator.plant import PEERS
from factorylm.protocols import PROTOCOLS, Protocol


def _resolve(target: str) -> object:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("protocol", list(Protocol))
def test_every_protocol_has_a_driver_and_a_simulated_peer(protocol: Protocol) -> None:
    driver = _resolve(PROTOCOLS[protocol].driver)
    peer = _resolve(PEERS[protocol])
    assert callable(getattr(driver, "read_points", None))
    assert callable(getattr(peer, "start", None))


@pytest.mark.parametrize("protocol", [p for p in Protocol if PROTOCOLS[p].collector])
def test_every_push_collector_resolves_to_a_collector_base(protocol: Protocol) -> None:
    from ingest.collector import Collector, CollectorBase

    cls = _resolve(PROTOCOLS[protocol].collector or "")
    assert isinstance(cls, type) and issubclass(cls, CollectorBase), cls
    assert cls is not Collector and cls.run is not CollectorBase.run, cls


def test_every_demo_scenario_resolves_to_a_coroutine_function() -> None:
    import inspect

    assert {"drift", "photo", "monkey", "health"} <= set(SCENARIOS)
    for name in SCENARIOS:
        assert inspect.iscoroutinefunction(scenario(name)), name


def test_an_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: drift, photo"):
        scenario("dance")


def test_the_development_commands_come_through_entry_points() -> None:
    names = [n for c in commands() for n in c.names]
    assert {"demo", "bench", "simulate", "db", "worker", "manuals", "monkey"} <= set(names)
    assert len(names) == len(set(names))


def test_the_application_starts_without_the_development_package() -> None:
    """The production image has no dev/: the product's commands still work and a
    development command says how to get it, instead of a traceback."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dev' or name.startswith('dev.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from app.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    help_run = subprocess.run(
        [sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "worker" in help_run.stdout and "not installed here" in help_run.stdout
    demo_run = subprocess.run(
        [sys.executable, "-c", code, "demo"], capture_output=True, text=True, timeout=60
    )
    assert demo_run.returncode == 2
    assert "development command" in demo_run.stderr and ".[sim]" in demo_run.stderr
