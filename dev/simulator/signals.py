"""Realistic process signals: noise around a baseline, a slow trend, a daily cycle, and faults.

Faults are expressed in the metric's own baseline sigmas so a scenario can say "step 4σ"
without knowing the unit.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum


class FaultKind(StrEnum):
    STEP = "step"
    RAMP = "ramp"
    STUCK = "stuck"
    DROPOUT = "dropout"
    OFFLINE = "offline"  # the whole PLC stops answering; handled by the peer, not the signal


SIGNAL_FAULTS = frozenset({FaultKind.STEP, FaultKind.RAMP, FaultKind.STUCK, FaultKind.DROPOUT})


_SIZE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(?:sigma|σ|s)?\s*$", re.IGNORECASE)


def parse_sigma(text: str) -> float:
    """'4sigma', '-2.5σ', '3' -> sigmas."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"fault size {text!r}: expected sigmas, e.g. 4sigma, -2.5sigma or 3")
    return float(match[1])


class FaultError(ValueError):
    """A fault request names an unknown PLC or metric, or an unknown kind."""


@dataclass
class Fault:
    kind: FaultKind
    size_sigma: float = 0.0
    started: float = field(default_factory=time.monotonic)
    ramp_seconds: float = 30.0


@dataclass
class Signal:
    mean: float
    std: float
    noise_fraction: float = 0.6  # healthy noise sits inside the baseline band
    trend_per_hour: float = 0.0
    daily_amplitude: float = 0.2  # in sigmas
    fault: Fault | None = None
    _rng: random.Random = field(default_factory=random.Random)
    _last: float | None = None
    _t0: float = field(default_factory=time.monotonic)

    def seed(self, value: int) -> None:
        self._rng.seed(value)

    def value(self, now: float | None = None, wall: float | None = None) -> float | None:
        """The next reading, or None during a dropout (the register keeps its old value)."""
        now = time.monotonic() if now is None else now
        wall = time.time() if wall is None else wall
        fault = self.fault
        if fault and fault.kind is FaultKind.DROPOUT:
            return None
        if fault and fault.kind is FaultKind.STUCK and self._last is not None:
            return self._last
        hours = (now - self._t0) / 3600
        day_phase = 2 * math.pi * ((wall % 86400) / 86400)
        value = (
            self.mean
            + self._rng.gauss(0.0, self.std * self.noise_fraction)
            + self.trend_per_hour * hours
            + self.daily_amplitude * self.std * math.sin(day_phase)
        )
        if fault and fault.kind is FaultKind.STEP:
            value += fault.size_sigma * self.std
        elif fault and fault.kind is FaultKind.RAMP:
            progress = min(1.0, (now - fault.started) / fault.ramp_seconds)
            value += fault.size_sigma * self.std * progress
        self._last = value
        return value
