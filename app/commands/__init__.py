"""The `factorylm` subcommands: the one registry the CLI builds its parser from.

A command module exports `COMMAND = Command(names=…, add_parsers=…, run=…)`. The product's own
modules are listed in PRODUCT_COMMANDS; development commands (demo, bench, simulate) live in
the `dev` package above this layer and reach the CLI through the `factorylm.commands` entry
point group declared in pyproject.toml, so the application never imports development code.
Keep command modules light at import time: heavy imports belong inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from factorylm.settings import Settings

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # argparse's class is generic only in typeshed
    SubParsers = argparse._SubParsersAction

ENTRY_POINT_GROUP = "factorylm.commands"
PRODUCT_COMMANDS = (
    "app.commands.services",
    "app.commands.tokens",
    "app.commands.agents",
    "app.commands.monkey",
    "app.commands.plc",
)


@dataclass(frozen=True)
class Command:
    names: tuple[str, ...]  # the subcommands it adds, e.g. ("manuals", "outcome")
    add_parsers: Callable[[SubParsers], None]
    run: Callable[[Settings, argparse.Namespace], int]


def commands() -> list[Command]:
    found: list[Command] = [importlib.import_module(m).COMMAND for m in PRODUCT_COMMANDS]
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            command = ep.load()
        except ImportError as exc:
            # The production image has the product only: development commands say so.
            command = _not_installed(ep.name, exc)
        if not isinstance(command, Command):
            raise TypeError(f"entry point {ep.value} is not a factorylm Command")
        found.append(command)
    names = [n for c in found for n in c.names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RuntimeError(f"two command modules add {', '.join(repeated)}")
    return found


def _not_installed(name: str, exc: ImportError) -> Command:
    def add(sub: SubParsers) -> None:
        sub.add_parser(name, help=f"(not installed here: {exc.name or exc})", add_help=False)

    def run(_settings: Settings, _args: argparse.Namespace) -> int:
        print(
            f"error: `factorylm {name}` is a development command and is not installed here "
            f"({exc}); from a source checkout run `pip install -e '.[sim]'` or `make demo`",
            file=sys.stderr,
        )
        return 2

    return Command(names=(name,), add_parsers=add, run=run)
