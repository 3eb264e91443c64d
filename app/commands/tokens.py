"""`factorylm tokens add|list|revoke`: the API's per-client tokens, each bound to a role."""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.commands import Command, SubParsers
from factorylm.settings import Settings


def add_parsers(sub: SubParsers) -> None:
    tokens = sub.add_parser("tokens", help="the API's per-client tokens (roles, revocation)")
    actions = tokens.add_subparsers(dest="tokens_action", required=True)
    add = actions.add_parser("add", help="make a token; it is printed once, keep it")
    add.add_argument("name", help="who uses it, e.g. line3-tablet")
    add.add_argument(
        "--role",
        required=True,
        choices=["uploader", "viewer", "approver", "admin"],
        help="uploader: photos only; viewer: reads; approver: reads and decisions as "
        "--approver; admin: reads and uploads",
    )
    add.add_argument("--approver", help="the approver identity (from FACTORYLM_APPROVERS)")
    actions.add_parser("list", help="tokens by name with role and state (never the token)")
    revoke = actions.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("name")


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from factorylm.api_tokens import Role, TokenError, TokenStore
    from factorylm.db.pool import create_pool, prepare_database

    await prepare_database(settings)
    pool = await create_pool(settings, max_size=1)
    store = TokenStore(pool)
    try:
        if args.tokens_action == "add":
            try:
                token = await store.add(
                    args.name,
                    Role(args.role),
                    approver=args.approver,
                    approvers=list(settings.approvers),
                )
            except TokenError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(token)
            print(
                f"token {args.name!r} ({args.role}"
                + (f", as {args.approver}" if args.approver else "")
                + "): shown once; send it as `Authorization: Bearer <token>`",
                file=sys.stderr,
            )
        elif args.tokens_action == "list":
            for info in await store.list():
                state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
                who = f" as {info.approver}" if info.approver else ""
                print(f"{info.name}\t{info.role}{who}\t{state}")
        elif not await store.revoke(args.name):
            print(f"error: no active token named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"token {args.name!r} revoked")
    finally:
        await pool.close()
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, args))


COMMAND = Command(names=("tokens",), add_parsers=add_parsers, run=run)
