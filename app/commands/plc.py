"""`factorylm plc browse opcua://host:port [--path …]`: a server's variables with their data
types, and the plant-file entries to paste for them."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app.commands import Command, SubParsers
from factorylm.settings import Settings

if TYPE_CHECKING:
    from factorylm.drivers.opcua import BrowsedVariable


def add_parsers(sub: SubParsers) -> None:
    plc = sub.add_parser("plc", help="look at a PLC or server before adding it to the plant file")
    actions = plc.add_subparsers(dest="plc_action", required=True)
    browse = actions.add_parser(
        "browse",
        help="list an OPC UA server's variables (NodeId, data type) and print plant-file "
        "entries to paste",
    )
    browse.add_argument("url", help="opc.tcp://host:port[/path] (opcua://host:port also works)")
    browse.add_argument(
        "--path", help="start at this browse path under Objects, e.g. 2:Line1/2:Mixer"
    )
    browse.add_argument("--username")
    browse.add_argument(
        "--password-env", help="the environment variable that holds the user's password"
    )
    browse.add_argument("--security", choices=["none", "sign", "sign_and_encrypt"], default="none")
    browse.add_argument("--certificate", help="the client's certificate (PEM or DER)")
    browse.add_argument("--private-key", help="the client's private key (PEM or DER)")
    browse.add_argument(
        "--trust",
        action="append",
        default=[],
        help="a trusted server certificate or a directory of them (repeatable)",
    )
    browse.add_argument("--max-nodes", type=int, default=5000, help="stop after this many nodes")


def normalise_url(url: str) -> str:
    """opc.tcp://host:port/path; `opcua://` is accepted as a nickname. ValueError if neither."""
    parts = urlsplit(url)
    if parts.scheme not in ("opc.tcp", "opcua") or not parts.hostname:
        raise ValueError(f"{url!r} is no opc.tcp://host:port URL")
    port = parts.port or 4840
    return f"opc.tcp://{parts.hostname}:{port}{parts.path}"


def point_name(browse_path: str, taken: set[str]) -> str:
    """A plant-file point name from the last step of a browse path: snake case, unique."""
    last = browse_path.rsplit("/", 1)[-1].partition(":")[2] or browse_path
    name = re.sub(r"[^A-Za-z0-9_]+", "_", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", last))
    name = name.strip("_").lower() or "point"
    if not re.match(r"[A-Za-z_]", name):
        name = f"p_{name}"
    unique, n = name, 2
    while unique in taken:
        unique, n = f"{name}_{n}", n + 1
    taken.add(unique)
    return unique


def render(url: str, variables: list[BrowsedVariable]) -> str:
    """The listing, then the entries to paste under a PLC's `metrics:` and `setpoints:`."""
    lines = [f"{len(variables)} variables at {url}", ""]
    width = max((len(v.browse_path) for v in variables), default=10)
    for v in variables:
        mark = "" if v.usable else "  (not numeric: not collectable)"
        rw = "rw" if v.writable else "r "
        lines.append(f"  {v.browse_path:<{width}}  {rw}  {v.data_type:<8}  {v.node_id}{mark}")
    usable = [v for v in variables if v.usable]
    parts = urlsplit(url)
    taken: set[str] = set()
    entry = [
        "",
        "# Paste into the plant file's plcs: (fill in vendor, baselines, setpoint bounds):",
        "  - id: CHANGE-ME",
        "    vendor: CHANGE-ME",
        "    protocol: opcua",
        f"    host: {parts.hostname}",
        f"    port: {parts.port}",
    ]
    if parts.path:
        entry += ["    opcua:", f"      path: {parts.path}"]
    # A writable variable is offered as a setpoint (writes still need a catalog action).
    readable = [v for v in usable if not v.writable]
    writable = [v for v in usable if v.writable]
    if readable:
        entry.append("    metrics:")
    for v in readable:
        entry += [
            f"      - name: {point_name(v.browse_path, taken)}",
            f"        node_id: {_yaml_string(v.node_id)}",
            f"        type: {v.data_type}",
        ]
    if writable:
        entry.append("    setpoints:  # writable: keep the real setpoints, set their bounds")
        for v in writable:
            entry += [
                f"      - name: {point_name(v.browse_path, taken)}",
                f"        node_id: {_yaml_string(v.node_id)}",
                f"        type: {v.data_type}",
                "        min: CHANGE-ME",
                "        max: CHANGE-ME",
            ]
    if not usable:
        entry.append("    metrics: []  # no numeric variables here; try another --path")
    return "\n".join(lines + entry)


def _yaml_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def browse_url(args: argparse.Namespace) -> str:
    from asyncua.ua.uaerrors import UaError

    from factorylm.drivers import PlcError
    from factorylm.drivers.opcua import browse, open_client
    from factorylm.plant import OpcUa

    url = normalise_url(args.url)
    settings = OpcUa(
        security=args.security,
        certificate=args.certificate,
        private_key=args.private_key,
        trust=args.trust,
    )
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise PlcError(f"{url}: the environment variable {args.password_env} is not set")
    client = await open_client(url, settings, who=url, username=args.username, password=password)
    try:
        variables = await browse(client, args.path, max_nodes=args.max_nodes)
    except UaError as exc:
        where = f" under {args.path}" if args.path else ""
        raise PlcError(f"{url}: browsing{where}: {exc}") from exc
    finally:
        await client.disconnect()
    return render(url, variables)


def run(_settings: Settings, args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from factorylm.drivers import PlcError

    try:
        print(asyncio.run(browse_url(args)))
    except (PlcError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


COMMAND = Command(names=("plc",), add_parsers=add_parsers, run=run)
