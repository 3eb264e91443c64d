"""The running simulator's control channel: a loopback HTTP endpoint for `simulate inject`.

POST /faults {"plc", "metric", "kind", "size"} injects; DELETE /faults?plc=&metric= clears;
GET /faults lists what is active.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from factorylm.simulator.plant import PlantSimulator


class _QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the simulator process owns Ctrl-C."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


def build_app(sim: PlantSimulator) -> Starlette:
    from factorylm.simulator.plant import FaultError, parse_sigma

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


class ControlServer:
    def __init__(self, sim: PlantSimulator, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            build_app(sim), host=host, port=port, log_level="warning", lifespan="off"
        )
        self._server = _QuietUvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        started = asyncio.create_task(self._server.listening.wait())
        await asyncio.wait([self._task, started], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            started.cancel()
            self._task.result()  # raises the bind error
            raise RuntimeError(f"simulator control channel stopped at start ({self.url})")

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
