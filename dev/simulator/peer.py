"""What every simulated PLC shares: one realistic signal per metric, a tick that stores fresh
values in the protocol server's memory, setpoints that power up at nominal, and faults."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal as _signal
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from dev.simulator.signals import SIGNAL_FAULTS, Fault, FaultKind, Signal
from factorylm.plant import Plc, Point

log = logging.getLogger(__name__)


class SimulatedPeer(ABC):
    """A PLC served by a real protocol server. Subclasses say how values reach its memory."""

    protocol_label = "PLC"

    def __init__(self, plc: Plc, *, seed: int = 0, tick_s: float | None = None) -> None:
        self.plc = plc
        self.signals: dict[str, Signal] = {}
        for metric in plc.metrics:
            base = metric.baseline
            mean, std = (base.mean, base.std) if base else (100.0, 1.0)
            signal = Signal(mean=mean, std=std)
            signal.seed(seed ^ zlib.crc32(f"{plc.id}/{metric.name}".encode()))
            self.signals[metric.name] = signal
        # Refresh twice per poll so every poll sees a fresh value.
        self._period = tick_s if tick_s is not None else plc.poll_interval_ms / 1000 / 2
        self._task: asyncio.Task[None] | None = None
        self.offline = False

    # -- what a protocol provides -------------------------------------------------------------
    @abstractmethod
    async def _serve(self) -> None:
        """Start the protocol server."""

    @abstractmethod
    async def _unserve(self) -> None:
        """Stop the protocol server."""

    @abstractmethod
    async def _store(self, values: Sequence[tuple[Point, float]]) -> None:
        """Put values into the PLC's memory, as the PLC program would."""

    @abstractmethod
    async def read(self, name: str) -> float:
        """A point's current value, from the server's memory (what a client would read)."""

    @abstractmethod
    async def _set_answering(self, answering: bool) -> None:
        """Stop or resume answering requests (the PLC hangs or drops off the network)."""

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients reach this peer, for log lines."""

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._serve()
        # Setpoints power up at their upper bound (running at nominal), as a real PLC would.
        if self.plc.setpoints:
            await self._store([(s, s.max) for s in self.plc.setpoints])
        await self.tick()
        self._task = asyncio.create_task(self._run(), name=f"sim-{self.plc.id}")
        log.info("simulating %s %s on %s", self.protocol_label, self.plc.id, self.address)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._unserve()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            if self.offline:
                continue
            try:
                await self.tick()
            except Exception:
                # A simulator hiccup must not end the simulation; say so and keep ticking.
                log.exception("%s: tick failed", self.plc.id)

    async def tick(self) -> None:
        values = []
        for metric in self.plc.metrics:
            value = self.signals[metric.name].value()
            if value is not None:
                values.append((metric, self._clamp(metric, value)))
        if values:
            await self._store(values)

    @staticmethod
    def _clamp(point: Point, value: float) -> float:
        # Unsigned registers cannot hold a negative reading; a real sensor would clamp too.
        if point.type in ("u16", "u32") and value < 0:
            return 0.0
        return value

    async def _write(self, name: str, value: float) -> None:
        point = self.plc.point(name)
        if point is None:
            raise KeyError(f"{self.plc.id} has no point {name!r}")
        await self._store([(point, value)])

    # -- faults ---------------------------------------------------------------------------------
    def inject(self, metric: str, kind: FaultKind, size_sigma: float = 0.0) -> None:
        """A signal fault on one metric (step, ramp, stuck, dropout)."""
        if kind not in SIGNAL_FAULTS:
            raise ValueError(f"{kind} is not a signal fault; use set_offline() for offline")
        if metric not in self.signals:
            known = ", ".join(self.signals)
            raise KeyError(f"{self.plc.id} has no metric {metric!r} (it has {known})")
        self.signals[metric].fault = Fault(kind=kind, size_sigma=size_sigma)
        log.info("injected %s %+.1fσ on %s/%s", kind, size_sigma, self.plc.id, metric)

    def clear(self, metric: str | None = None) -> None:
        for name, signal in self.signals.items():
            if metric is None or name == metric:
                signal.fault = None

    async def set_offline(self, offline: bool) -> None:
        if offline == self.offline:
            return
        self.offline = offline
        await self._set_answering(not offline)
        log.info("%s is %s", self.plc.id, "offline" if offline else "back online")

    def faults(self) -> dict[str, str]:
        out = {
            name: f"{s.fault.kind} {s.fault.size_sigma:+g}σ"
            for name, s in self.signals.items()
            if s.fault is not None
        }
        if self.offline:
            out["*"] = "offline"
        return out


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel sends SIGTERM to the child when the simulator's thread
    # exits, so a killed demo leaves no cpppo or socat behind.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, _signal.SIGTERM)


# For the peers' helper processes (cpppo, socat): their own session, so the terminal's Ctrl-C
# reaches only the simulator, which then stops them in order instead of watching them die
# under it mid-poll; and they still die with the simulator if it is killed.
HELPER_PROCESS: dict[str, Any] = {"start_new_session": True, "preexec_fn": _die_with_parent}
