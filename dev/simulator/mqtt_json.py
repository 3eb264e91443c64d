"""A simulated device that publishes plain JSON to MQTT topics (a gateway, a smart sensor):
every tick, one message per topic of the plant entry, each value placed at its point's
json_path ("data.temp" → {"data": {"temp": 21.5}}). It has no command path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import aiomqtt

from dev.simulator.peer import SimulatedPeer
from factorylm.drivers.mqtt import mqtt_client
from factorylm.plant import Plc, Point

log = logging.getLogger(__name__)


def _place(doc: dict[str, Any], path: str, value: float) -> None:
    keys = path.split(".")
    node = doc
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


class SimulatedJsonDevice(SimulatedPeer):
    protocol_label = "MQTT JSON"

    def __init__(self, plc: Plc, *, seed: int = 0, tick_s: float | None = None) -> None:
        super().__init__(plc, seed=seed, tick_s=tick_s or plc.poll_interval_ms / 1000)
        self._memory: dict[str, float] = {}
        self._client: aiomqtt.Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self.published = 0

    @property
    def address(self) -> str:
        return f"mqtt://{self.plc.host}:{self.plc.tcp_port}"

    async def _serve(self) -> None:
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                mqtt_client(self.plc, f"sim-{self.plc.id}", persistent=False)
            )
        except aiomqtt.MqttError as exc:
            raise RuntimeError(f"{self.plc.id}: no broker at {self.address}: {exc}") from exc
        self._stack = stack

    async def _unserve(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(aiomqtt.MqttError, asyncio.CancelledError):
                await stack.aclose()

    async def _store(self, values: Sequence[tuple[Point, float]]) -> None:
        docs: dict[str, dict[str, Any]] = {}
        for point, value in values:
            self._memory[point.name] = value
            if point.topic and point.json_path:
                _place(docs.setdefault(point.topic, {}), point.json_path, value)
        client = self._client
        if client is None:
            return
        for topic, doc in docs.items():
            try:
                await client.publish(topic, json.dumps(doc), qos=1)
                self.published += 1
            except aiomqtt.MqttError as exc:
                log.warning("%s: not published (%s)", self.plc.id, exc)

    async def read(self, name: str) -> float:
        if name not in self._memory:
            raise KeyError(f"{self.plc.id} has no value for {name!r}")
        return self._memory[name]

    async def _set_answering(self, answering: bool) -> None:
        if answering:
            await self._serve()
        else:
            await self._unserve()
