"""The plant simulator: one real protocol peer per PLC in a plant file, with run-time faults."""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import cast

from dev.mosquitto import Mosquitto, start_brokers
from dev.simulator.control import ControlServer
from dev.simulator.peer import SimulatedPeer
from dev.simulator.signals import FaultError, FaultKind
from factorylm.plant import Plant, Plc, Protocol

log = logging.getLogger(__name__)


# The simulated peer of each protocol (factorylm.protocols lists the product's side), as
# "module:Class" so that a plant without Logix PLCs never starts cpppo.
PEERS: dict[Protocol, str] = {
    Protocol.MODBUS_TCP: "dev.simulator.modbus:SimulatedModbusPlc",
    Protocol.MODBUS_RTU: "dev.simulator.modbus:SimulatedModbusRtuPlc",
    Protocol.S7: "dev.simulator.s7:SimulatedS7Plc",
    Protocol.LOGIX: "dev.simulator.logix:SimulatedLogixPlc",
    Protocol.OPCUA: "dev.simulator.opcua:SimulatedOpcUaPlc",
    Protocol.SPARKPLUG_B: "dev.simulator.sparkplug:SimulatedSparkplugNode",
    Protocol.MQTT_JSON: "dev.simulator.mqtt_json:SimulatedJsonDevice",
}


def peer_for(plc: Plc, *, seed: int = 0) -> SimulatedPeer:
    module, _, cls = PEERS[plc.protocol].partition(":")
    peer = getattr(importlib.import_module(module), cls)
    return cast(SimulatedPeer, peer(plc, seed=seed))


class PlantSimulator:
    def __init__(
        self,
        plant: Plant,
        *,
        seed: int = 0,
        control_host: str = "127.0.0.1",
        control_port: int | None = None,
        only: set[Protocol] | None = None,
    ) -> None:
        self.plant = plant
        self.peers: dict[str, SimulatedPeer] = {
            plc.id: peer_for(plc, seed=seed)
            for plc in plant.plcs
            if only is None or plc.protocol in only
        }
        self.control = (
            ControlServer(self, control_host, control_port) if control_port is not None else None
        )
        self._started: list[SimulatedPeer] = []
        self.brokers: list[Mosquitto] = []

    async def start(self) -> None:
        try:
            # MQTT peers publish to a broker: the simulated plant brings its own.
            served = [p.plc for p in self.peers.values()]
            self.brokers = await start_brokers(
                self.plant, served if len(served) < len(self.plant.plcs) else None
            )
            for peer in self.peers.values():
                await peer.start()
                self._started.append(peer)
            if self.control is not None:
                await self.control.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.stop()
        started, self._started = self._started, []
        results = await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
        for peer, result in zip(started, results, strict=True):
            if isinstance(result, Exception):
                log.warning("stopping simulated %s failed: %s", peer.plc.id, result)
        brokers, self.brokers = self.brokers, []
        for broker in brokers:
            await broker.close()

    def peer(self, plc_id: str) -> SimulatedPeer:
        peer = self.peers.get(plc_id)
        if peer is None:
            raise FaultError(f"no simulated PLC {plc_id!r}; simulated: {', '.join(self.peers)}")
        return peer

    async def inject(
        self, plc_id: str, metric: str | None, kind: FaultKind | str, size_sigma: float = 0.0
    ) -> None:
        peer = self.peer(plc_id)
        try:
            kind = FaultKind(kind)
        except ValueError:
            kinds = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"unknown fault kind {kind!r}; kinds: {kinds}") from None
        if kind is FaultKind.OFFLINE:
            await peer.set_offline(True)
            return
        if not metric:
            raise FaultError(f"a {kind} fault needs a metric")
        try:
            peer.inject(metric, kind, size_sigma)
        except KeyError as exc:
            raise FaultError(str(exc.args[0])) from None

    async def clear(self, plc_id: str | None = None, metric: str | None = None) -> None:
        """Clear one metric's fault, or every fault of a PLC (bringing it back online)."""
        peers = [self.peer(plc_id)] if plc_id else list(self.peers.values())
        for peer in peers:
            peer.clear(metric)
            if metric is None:
                await peer.set_offline(False)

    def faults(self) -> dict[str, dict[str, str]]:
        return {plc_id: peer.faults() for plc_id, peer in self.peers.items()}
