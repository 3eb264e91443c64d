"""Temporal client construction and the search attributes the Web UI filters on."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter

from factorylm import tracing
from factorylm.settings import Settings

PLC_ID = SearchAttributeKey.for_keyword("PlcId")
METRIC = SearchAttributeKey.for_keyword("Metric")
SEVERITY = SearchAttributeKey.for_keyword("Severity")
ASSET_ID = SearchAttributeKey.for_keyword("AssetId")
SEARCH_ATTRIBUTES = (PLC_ID, METRIC, SEVERITY, ASSET_ID)


class TemporalUnavailable(RuntimeError):
    """Temporal could not be reached; the message says how to start it."""


async def connect(settings: Settings, *, address: str | None = None) -> Client:
    target = address or settings.temporal_address
    try:
        return await Client.connect(
            target,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
            # Workers built on this client inherit it: one trace from alarm to activities.
            interceptors=[tracing.interceptor()],
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {target} ({exc}); start it with `factorylm temporal start`"
        ) from exc
