"""List prices, USD per million tokens (input, output), for the cost column of llm_usage.

A model not listed costs 0 here and is logged as unpriced, so the budget under-counts rather
than failing a call; add it when a new model is configured.
"""

from __future__ import annotations

PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-4-1": (15.0, 75.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
}


def price_for(model: str) -> tuple[float, float] | None:
    if model in PRICES_PER_MTOK:
        return PRICES_PER_MTOK[model]
    # Dated snapshots ("claude-sonnet-4-5-20250929") cost what their family costs.
    for name in sorted(PRICES_PER_MTOK, key=len, reverse=True):
        if model.startswith(name + "-"):
            return PRICES_PER_MTOK[name]
    return None


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    price = price_for(model)
    if price is None:
        return 0.0
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000
