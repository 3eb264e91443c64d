"""The `factorylm` command: subcommands come from the registry in app/commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

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


def entry() -> NoReturn:
    """The installed `factorylm` command: `main`, then an exit that skips the interpreter's
    own shutdown.

    Why: a Temporal call still under way when the event loop ends (the board's status query
    to a workflow no worker answers, cancelled with the loop) completes on a thread of
    Temporal's native runtime, which then waits for the interpreter; the interpreter, shutting
    down, drops that runtime and waits for its threads: the process never exits (seen as an
    API that ignored SIGTERM's end for good). By now every command has closed what it owns
    (samples flushed, pools and servers closed); what is left to do is said here."""
    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    from factorylm.tracing import shutdown_tracing

    shutdown_tracing()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`factorylm … | head`): nothing to say
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
