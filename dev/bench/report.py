"""The JSON line of a latency benchmark: p99 of the product's path against the p99 of the
plainest way to do the same work, measured in the same run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def p99_line(
    bench: str, latencies_ms: Sequence[float], anchor_ms: Sequence[float], anchor_is: str,
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    value = float(np.percentile(latencies_ms, 99))
    anchor = float(np.percentile(anchor_ms, 99))
    return {
        "bench": bench,
        "value": round(value, 1),
        "unit": "ms",
        "anchor": round(anchor, 2),
        "ratio": round(value / anchor, 2),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 1),
        **extra,
        "anchor_is": anchor_is,
    }
