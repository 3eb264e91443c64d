"""Temporal client construction and the search attributes the Web UI filters on."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import RPCError, TLSConfig

from factorylm import tracing
from factorylm.codec import EncryptionCodec, with_codec
from factorylm.settings import Settings, SettingsError, reveal

PLC_ID = SearchAttributeKey.for_keyword("PlcId")
METRIC = SearchAttributeKey.for_keyword("Metric")
SEVERITY = SearchAttributeKey.for_keyword("Severity")
ASSET_ID = SearchAttributeKey.for_keyword("AssetId")
SITE = SearchAttributeKey.for_keyword("Site")
SEARCH_ATTRIBUTES = (PLC_ID, METRIC, SEVERITY, ASSET_ID, SITE)

log = logging.getLogger(__name__)


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the search attributes this version uses that the namespace lacks (an older
    deployment's Temporal, a dev server's database from before `Site`); returns those added.
    Where the client may not (a hosted namespace, a restricted role) the message says how."""
    try:
        known = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = [
            key.name
            for key in SEARCH_ATTRIBUTES
            if key.name not in known.custom_attributes and key.name not in known.system_attributes
        ]
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={
                        name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing
                    },
                )
            )
            log.warning("registered search attributes %s in %s", missing, client.namespace)
        return missing
    except RPCError as exc:
        names = " ".join(k.name for k in SEARCH_ATTRIBUTES)
        log.error(
            "cannot check or register the search attributes (%s); register them once: for a in "
            "%s; do temporal operator search-attribute create -n %s --name $a --type Keyword; "
            "done",
            exc,
            names,
            client.namespace,
        )
        return []


class TemporalUnavailable(RuntimeError):
    """Temporal could not be reached; the message says how to start it."""


def payload_codec(settings: Settings) -> EncryptionCodec | None:
    """The payload encryption codec when FACTORYLM_PAYLOAD_KEYS is set (docs/security.md)."""
    keys = reveal(settings.payload_keys)
    return EncryptionCodec.from_setting(keys) if keys else None


def data_converter(settings: Settings) -> DataConverter:
    return with_codec(pydantic_data_converter, payload_codec(settings))


def tls_config(settings: Settings) -> TLSConfig | bool:
    """mTLS for a Temporal server beyond loopback; False (plain TCP) when none is set."""
    files = {
        "FACTORYLM_TEMPORAL_TLS_CA": settings.temporal_tls_ca,
        "FACTORYLM_TEMPORAL_TLS_CERT": settings.temporal_tls_cert,
        "FACTORYLM_TEMPORAL_TLS_KEY": settings.temporal_tls_key,
    }
    if not any(files.values()) and not settings.temporal_tls_server_name:
        return False
    if bool(settings.temporal_tls_cert) != bool(settings.temporal_tls_key):
        raise SettingsError(
            "FACTORYLM_TEMPORAL_TLS_CERT and FACTORYLM_TEMPORAL_TLS_KEY go together (mTLS)"
        )
    read: dict[str, bytes | None] = {}
    for name, path in files.items():
        if path is None:
            read[name] = None
            continue
        try:
            read[name] = path.read_bytes()
        except OSError as exc:
            raise SettingsError(f"{name}={path}: cannot read ({exc.strerror})") from exc
    return TLSConfig(
        server_root_ca_cert=read["FACTORYLM_TEMPORAL_TLS_CA"],
        client_cert=read["FACTORYLM_TEMPORAL_TLS_CERT"],
        client_private_key=read["FACTORYLM_TEMPORAL_TLS_KEY"],
        domain=settings.temporal_tls_server_name or None,
    )


async def connect(settings: Settings, *, address: str | None = None) -> Client:
    target = address or settings.temporal_address
    try:
        return await Client.connect(
            target,
            namespace=settings.temporal_namespace,
            data_converter=data_converter(settings),
            tls=tls_config(settings),
            api_key=reveal(settings.temporal_api_key) or None,
            # Workers built on this client inherit it: one trace from alarm to activities.
            interceptors=[tracing.interceptor()],
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {target} ({exc}); start it with `factorylm temporal start`"
        ) from exc
