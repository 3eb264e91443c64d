"""Local servers for the fakes of hosted services and for benchmarks: loopback only."""

from __future__ import annotations

import socket

from starlette.applications import Starlette

from api.serving import AppServer


class LocalServer(AppServer):
    """A Starlette app on a loopback port (a free one unless given)."""

    def __init__(self, app: Starlette, port: int = 0) -> None:
        super().__init__(app, "127.0.0.1", port or free_port())
        self.app = app


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on right now (local servers, benchmarks), and never
    one this process has handed out before: the kernel's picks repeat often enough that a
    plant of 200 simulated devices would otherwise get two on the same port."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
