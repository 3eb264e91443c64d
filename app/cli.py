"""The `factorylm` command: subcommands come from the registry in app/commands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app.commands import Command, commands
from factorylm.settings import SettingsError, load_settings


def build_parser(found: list[Command] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="factorylm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in found if found is not None else commands():
        command.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    found = commands()
    args = build_parser(found).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from factorylm.tracing import setup_tracing

    setup_tracing(f"factorylm-{args.command}")
    command = next(c for c in found if args.command in c.names)
    return command.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
