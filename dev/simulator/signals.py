"""Realistic process signals: noise around a baseline, a slow trend, a daily cycle, and faults.

Faults are expressed in the metric's own baseline sigmas so a scenario can say "step 4σ"
without knowing the unit.

The noise is AR(1), x_t = φ·x_{t−1} + e_t, scaled so that its stationary standard deviation is
std·noise_fraction whatever φ: real sensors polled every second are autocorrelated (a bearing's
vibration or a temperature does not forget its last reading within a second), and that is what
makes a window mean vary more than σ/√n and textbook CUSUM/EWMA limits alarm too often. The live
peers keep φ = 0 unless told otherwise; `series` draws whole arrays of the same model with numpy
for the detection benchmark's corpus.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


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
    phi: float = 0.0  # lag-1 autocorrelation of the noise, per sample
    fault: Fault | None = None
    _rng: random.Random = field(default_factory=random.Random)
    _last: float | None = None
    _noise: float = 0.0
    _t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if not -1.0 < self.phi < 1.0:
            raise ValueError(f"phi {self.phi} must be inside (-1, 1) for stationary noise")

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
        # Innovations of std σ·√(1−φ²) keep the stationary std at σ for every φ.
        sd = self.std * self.noise_fraction
        self._noise = self.phi * self._noise + self._rng.gauss(0.0, sd * math.sqrt(1 - self.phi**2))
        value = (
            self.mean
            + self._noise
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


def ar1(innovations: np.ndarray, phi: float, start: float = 0.0, block: int = 256) -> np.ndarray:
    """x_t = φ·x_{t−1} + e_t over a whole array, vectorised: within a block of B samples
    x = Φ·e + φ^{1..B}·x_before (Φ lower-triangular with φ^{i−j}), so the Python loop runs once
    per block, not per sample. Exact, not an approximation."""
    n = len(innovations)
    if phi == 0.0 or n == 0:
        return innovations.astype(float, copy=True)
    idx = np.arange(block)
    lags = idx[:, None] - idx[None, :]
    kernel = np.where(lags >= 0, phi ** np.clip(lags, 0, None), 0.0)  # Φ
    carry = phi ** (idx + 1)
    padded = np.zeros(-(-n // block) * block)
    padded[:n] = innovations
    blocks = padded.reshape(-1, block) @ kernel.T  # every block as if it started from 0
    out = np.empty_like(blocks)
    before = start
    for i in range(len(blocks)):
        out[i] = blocks[i] + carry * before
        before = out[i, -1]
    return out.reshape(-1)[:n]


def series(
    signal: Signal,
    n: int,
    dt: float,
    rng: np.random.Generator,
    *,
    wall0: float = 0.0,
    fault: Fault | None = None,
    quantum: float = 0.0,
) -> np.ndarray:
    """n readings dt seconds apart of `signal`'s model (AR(1) noise, trend, daily cycle) with at
    most one fault, t = 0 at the first sample and the fault's `started` in the same seconds;
    what the register holds at each poll (a stuck or dropped-out sensor repeats its last
    reading; quantum: the register's resolution, e.g. 0.01 for a u16 with scale 0.01)."""
    t = np.arange(n) * dt
    sd = signal.std * signal.noise_fraction
    noise = ar1(rng.normal(0.0, sd * math.sqrt(1 - signal.phi**2), n), signal.phi,
                rng.normal(0.0, sd))  # fmt: skip
    day = 2 * np.pi * (((wall0 + t) % 86400) / 86400)
    x = (
        signal.mean
        + noise
        + signal.trend_per_hour * t / 3600
        + signal.daily_amplitude * signal.std * np.sin(day)
    )
    if fault is not None and fault.kind in (FaultKind.STEP, FaultKind.RAMP):
        on = t >= fault.started
        if fault.kind is FaultKind.STEP:
            x = x + np.where(on, fault.size_sigma * signal.std, 0.0)
        else:
            progress = np.clip((t - fault.started) / fault.ramp_seconds, 0.0, 1.0)
            x = x + fault.size_sigma * signal.std * progress
    if quantum > 0:
        x = np.round(x / quantum) * quantum
    if fault is not None and fault.kind in (FaultKind.STUCK, FaultKind.DROPOUT):
        first = int(np.searchsorted(t, fault.started))
        if 0 < first < n:
            x[first:] = x[first - 1]
    return x
