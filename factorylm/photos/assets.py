"""Which machine a photo shows, from text: an asset id typed by a person, a note, or the
nameplate/QR text the vision model read. Pure functions: the workflow's update validator uses
them too."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s_./:]+")


def normalise(text: str) -> str:
    """'PUMP 1', 'pump_1', 'Pump-1' → 'pump-1'."""
    return _SEPARATORS.sub("-", text.strip().lower()).strip("-")


def exact_asset(text: str | None, known: list[str]) -> str | None:
    if not text:
        return None
    wanted = normalise(text)
    return next((a for a in known if normalise(a) == wanted), None)


def asset_in_text(text: str | None, known: list[str]) -> str | None:
    """A known asset tag appearing as a whole token in free text ("SN 4411 ASSET PUMP-1")."""
    if not text:
        return None
    if found := exact_asset(text, known):
        return found
    flat = "-" + normalise(text) + "-"
    # Longest first, so "pump-10" is not read as "pump-1".
    for asset in sorted(known, key=len, reverse=True):
        if f"-{normalise(asset)}-" in flat:
            return asset
    return None
