"""The running simulator's control channel: a loopback HTTP endpoint for `simulate inject`.

POST /faults {"plc", "metric", "kind", "size"} injects; DELETE /faults?plc=&metric= clears;
GET /faults lists what is active.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.serving import AppServer
from dev.simulator.signals import FaultError, parse_sigma


class FaultTarget(Protocol):
    """What the control channel drives: the running plant simulator."""

    def faults(self) -> dict[str, dict[str, str]]: ...

    async def inject(
        self, plc_id: str, metric: str | None, kind: str, size_sigma: float = 0.0
    ) -> None: ...

    async def clear(self, plc_id: str | None = None, metric: str | None = None) -> None: ...


def build_app(sim: FaultTarget) -> Starlette:
    async def faults(request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse({"faults": sim.faults()})
        if request.method == "DELETE":
            try:
                await sim.clear(request.query_params.get("plc"), request.query_params.get("metric"))
            except FaultError as exc:
                return JSONResponse({"error": str(exc)}, 404)
            return JSONResponse({"faults": sim.faults()})
        try:
            body: dict[str, Any] = json.loads(await request.body() or b"{}")
            size = body.get("size", 0)
            sigma = parse_sigma(size) if isinstance(size, str) else float(size)
            await sim.inject(str(body.get("plc")), body.get("metric"), str(body.get("kind")), sigma)
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            status = 404 if isinstance(exc, FaultError) else 400
            return JSONResponse({"error": str(exc)}, status)
        return JSONResponse({"faults": sim.faults()})

    return Starlette(routes=[Route("/faults", faults, methods=["GET", "POST", "DELETE"])])


class ControlServer(AppServer):
    def __init__(self, sim: FaultTarget, host: str, port: int) -> None:
        super().__init__(build_app(sim), host, port)
