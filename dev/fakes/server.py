"""Local servers for the fakes of hosted services and for benchmarks: loopback only."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from starlette.applications import Starlette

from api.serving import AppServer


class LocalServer(AppServer):
    """A Starlette app on a loopback port (a free one unless given)."""

    def __init__(self, app: Starlette, port: int = 0) -> None:
        super().__init__(app, "127.0.0.1", port or free_port())
        self.app = app


_handed_out: set[int] = set()
_LOWEST = 10_000


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on right now (local servers, benchmarks), and never
    one this process has handed out before.

    Chosen below the kernel's ephemeral range: a port from there (what binding port 0 gives)
    can be taken by any outgoing connection between this check and the server's own bind —
    a benchmark's 200 simulated devices once lost one to a PostgreSQL connection."""
    high = _ephemeral_low()
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(_LOWEST, high) if high > _LOWEST + 1000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
