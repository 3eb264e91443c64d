"""The one base of every model that travels between the ingest, workflows and activities."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Frozen: a workflow input or activity result is a value, never edited in place."""

    model_config = ConfigDict(frozen=True)
