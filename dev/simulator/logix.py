"""A simulated Allen-Bradley PLC: cpppo's EtherNet/IP server in a subprocess.

cpppo keeps its tag table process-global, so every simulated Logix PLC gets its own
subprocess. The simulator updates the tags the way an HMI would, with EtherNet/IP writes
through the product's own driver (one multi-tag write per tick). Offline is SIGSTOP: the
process keeps its sockets open and simply stops answering, like a hung controller.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import sys
from collections.abc import Sequence

from dev.simulator.peer import HELPER_PROCESS, SimulatedPeer
from factorylm.drivers import PlcError
from factorylm.drivers.logix import LogixDriver
from factorylm.plant import Plc, Point, Protocol

log = logging.getLogger(__name__)

_CPPPO_TYPES = {"real": "REAL", "dint": "DINT", "int": "INT", "bool": "BOOL"}


class SimulatedLogixPlc(SimulatedPeer):
    protocol_label = "EtherNet/IP"

    def __init__(self, plc: Plc, *, seed: int = 0, tick_s: float | None = None) -> None:
        if plc.protocol is not Protocol.LOGIX:
            raise ValueError(f"{plc.id}: not a Logix PLC")
        # cpppo answers a request in milliseconds; refreshing at the poll rate is plenty.
        super().__init__(plc, seed=seed, tick_s=tick_s or plc.poll_interval_ms / 1000)
        self._proc: asyncio.subprocess.Process | None = None
        self._client = LogixDriver(plc, timeout_s=5.0)

    @property
    def address(self) -> str:
        return f"{self.plc.host}:{self.plc.tcp_port}"

    def _tag_specs(self) -> list[str]:
        points = [*self.plc.metrics, *self.plc.setpoints]
        return [f"{p.tag}={_CPPPO_TYPES[p.type]}" for p in points if p.tag]

    async def _serve(self) -> None:
        if importlib.util.find_spec("cpppo") is None:
            raise RuntimeError(
                f"{self.plc.id}: the simulated Allen-Bradley PLC needs cpppo, which comes with "
                "the simulator extra: pip install -e '.[sim]' (make demo and make test do it)"
            )
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cpppo.server.enip",
            "--address",
            self.address,
            "--address-output",
            "--no-udp",
            "--no-config",
            *self._tag_specs(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            **HELPER_PROCESS,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        try:
            # With --address-output cpppo prints "Network TCP Server address = (host, port)"
            # once it has bound the port.
            line = await asyncio.wait_for(self._proc.stdout.readline(), 20)
        except TimeoutError:
            line = b""
        if b"Server address" not in line:
            await self._unserve()
            err = await self._proc.stderr.read()
            raise RuntimeError(
                f"{self.plc.id}: cpppo's EtherNet/IP server did not start on {self.address}: "
                f"{(line + err).decode(errors='replace')[-500:]}"
            )
        self._drains = [
            asyncio.create_task(_discard(self._proc.stdout)),
            asyncio.create_task(_discard(self._proc.stderr)),
        ]
        await self._until_answering()

    async def _until_answering(self, timeout_s: float = 30.0) -> None:
        # cpppo binds before it is ready to serve, and its first answer can take seconds on a
        # loaded machine: retry the first exchange rather than fail the whole simulator.
        deadline = asyncio.get_running_loop().time() + timeout_s
        probe = next(p for p in [*self.plc.metrics, *self.plc.setpoints] if p.tag)
        while True:
            try:
                await self._client.read_points([probe])
                return
            except PlcError as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"{self.plc.id}: cpppo never answered: {exc}") from exc
                await self._client.close()

    async def _unserve(self) -> None:
        await self._client.close()
        self._client.shutdown()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _set_answering(self, answering: bool) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        self._proc.send_signal(signal.SIGCONT if answering else signal.SIGSTOP)
        if answering:
            await self._client.close()  # its connection timed out while the PLC was stopped

    async def _store(self, values: Sequence[tuple[Point, float]]) -> None:
        await self._client.write_points(values)

    async def read(self, name: str) -> float:
        point = self.plc.point(name)
        if point is None or not point.tag:
            raise KeyError(f"{self.plc.id} has no point {name!r}")
        return (await self._client.read_points([point]))[name]


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
