"""OPC UA driver on asyncua's client: the connection (security, trust list, user and password),
the plant file's points resolved to nodes with their data types, reads with status codes,
writes in the node's own data type, and browsing the address space.

Polling (`read_points`) serves the PLC-edge writer's read before and read-back; the ingest
receives data through subscriptions (ingest/subscription.py), which uses this driver's
connection and resolved nodes.

A point whose node is unknown or whose data type is not the one the plant file says is not an
error of the PLC: it is listed in `unusable` with the reason, and the collector counts it as
bad quality, while the other points go on.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from factorylm.drivers import PlcError
from factorylm.plant import OpcUa, Plc, Point

log = logging.getLogger(__name__)


class _ConnectionLossIsNoCrash(logging.Filter):
    """asyncua's publish loop logs a lost connection as an ERROR with a traceback, every
    second until the session is closed; the collector reports the loss itself (a WARNING
    naming the PLC, counted, alerted), so those records are dropped. Any other error of
    asyncua's still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        lost = isinstance(exc, ConnectionError | OSError | TimeoutError)
        return not (lost and str(record.msg).startswith("Publish iteration crashed"))


logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_ConnectionLossIsNoCrash())

# The plant file's type names and the OPC UA built-in types they mean.
VARIANT_TYPES: dict[str, ua.VariantType] = {
    "boolean": ua.VariantType.Boolean,
    "sbyte": ua.VariantType.SByte,
    "byte": ua.VariantType.Byte,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "int64": ua.VariantType.Int64,
    "uint64": ua.VariantType.UInt64,
    "float": ua.VariantType.Float,
    "double": ua.VariantType.Double,
}
TYPE_NAMES = {vt: name for name, vt in VARIANT_TYPES.items()}
_INT_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
MAX_CERT_FILES = 1000
WATCHDOG_S = 5.0
# What a server answers when it does not accept the client's certificate.
CERTIFICATE_REFUSED = {
    StatusCodes.BadCertificateUntrusted,
    StatusCodes.BadCertificateInvalid,
    StatusCodes.BadSecurityChecksFailed,
    StatusCodes.BadCertificateUriInvalid,
}  # a trust directory is read whole; bound it


def endpoint_url(plc: Plc) -> str:
    path = plc.opcua.path if plc.opcua else ""
    return f"opc.tcp://{plc.host}:{plc.tcp_port}{path}"


def type_name(data_type: ua.NodeId) -> str:
    """The plant-file name of a built-in data type, or how the server names it ("i=290")."""
    if data_type.NamespaceIndex == 0 and isinstance(data_type.Identifier, int):
        try:
            vt = ua.VariantType(data_type.Identifier)
        except ValueError:
            return data_type.to_string()
        return TYPE_NAMES.get(vt, vt.name)
    return data_type.to_string()


def as_float(value: Any) -> float | None:
    """A variable's value as a sample, or None when it is no number (a string, an array)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def encode(vt: ua.VariantType, value: float, where: str) -> ua.Variant:
    """`value` in the node's own type; refused (PlcError) when that type cannot hold it."""
    if vt is ua.VariantType.Boolean:
        if value not in (0.0, 1.0):
            raise PlcError(f"{where}: {value:g} is no boolean (0 or 1)")
        return ua.Variant(value == 1.0, vt)
    if vt in _INT_RANGES:
        low, high = _INT_RANGES[vt]
        if not math.isfinite(value) or value != int(value) or not low <= value <= high:
            raise PlcError(f"{where}: {value:g} does not fit the node's type {TYPE_NAMES[vt]}")
        return ua.Variant(int(value), vt)
    return ua.Variant(float(value), vt)


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def describe_certificate(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return f"{cert.subject.rfc4514_string()!r} (SHA-256 {fingerprint(der)[:32]}…)"


def _first_der(der: bytes) -> bytes:
    """The first certificate of a DER chain (some servers send theirs with its issuers)."""
    if len(der) < 4 or der[0] != 0x30:
        return der
    if der[1] < 0x80:
        return der[: 2 + der[1]]
    n = der[1] & 0x7F
    return der[: 2 + n + int.from_bytes(der[2 : 2 + n], "big")]


def _load_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


class TrustList:
    """The server certificates (or their issuers) a client trusts, from files and directories."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.sources = list(entries)
        self.certificates: list[x509.Certificate] = []
        for entry in self.sources:
            path = Path(entry)
            files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
            for file in files[:MAX_CERT_FILES]:
                try:
                    self.certificates.append(_load_certificate(file))
                except (OSError, ValueError) as exc:
                    # A trust list that silently lost an entry would refuse servers later for
                    # a reason nobody sees; say which file is wrong now.
                    raise PlcError(f"trust list entry {file}: not a certificate ({exc})") from exc

    def untrusted(self, cert: x509.Certificate) -> str | None:
        """Why `cert` is not to be trusted, or None: it must be one of the trusted
        certificates or signed by one of them, and be within its validity period."""
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return (
                f"it is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
        der = cert.public_bytes(serialization.Encoding.DER)
        for trusted in self.certificates:
            if trusted.public_bytes(serialization.Encoding.DER) == der:
                return None
            try:
                cert.verify_directly_issued_by(trusted)
            except (ValueError, TypeError, InvalidSignature):  # another issuer or key
                continue
            return None
        return (
            f"it is not in, nor issued by a certificate in, opcua.trust ({', '.join(self.sources)})"
        )


@dataclass
class ResolvedPoint:
    point: Point
    node: Node
    variant_type: ua.VariantType


LostCallback = Callable[[Exception], Coroutine[Any, Any, None]]


class OpcUaDriver:
    def __init__(self, plc: Plc, *, timeout_s: float = 1.0) -> None:
        self.plc = plc
        self.url = endpoint_url(plc)
        self._timeout_s = max(timeout_s, 0.5)
        self._settings = plc.opcua or OpcUa()
        self.client: Client | None = None
        self.resolved: dict[str, ResolvedPoint] = {}
        self.unusable: dict[str, str] = {}  # point name -> why it cannot be read or written
        self.on_lost: LostCallback | None = None
        self._lost_connection = False

    # -- connection ---------------------------------------------------------------------------
    async def connect(self) -> None:
        if self.client is not None and not self._lost_connection:
            return
        if self.client is not None:
            # asyncua's watchdog saw the connection go: start afresh rather than fail the
            # next request on a dead client.
            await self.close()
        password = None
        if self.plc.username and self.plc.password_env:
            password = os.environ.get(self.plc.password_env)
            if password is None:
                raise PlcError(
                    f"PLC {self.plc.id}: the environment variable {self.plc.password_env} "
                    "(its OPC UA password) is not set"
                )
        self.client = await open_client(
            self.url,
            self._settings,
            who=f"PLC {self.plc.id}",
            username=self.plc.username,
            password=password,
            timeout_s=self._timeout_s,
            on_lost=self._lost,
        )
        try:
            await self._resolve([*self.plc.metrics, *self.plc.setpoints])
        except (OSError, TimeoutError, UaError) as exc:
            await self.close()
            raise PlcError(f"PLC {self.plc.id}: resolving nodes at {self.url}: {exc!r}") from exc

    @property
    def connected(self) -> bool:
        """A client whose connection asyncua has not seen drop."""
        return self.client is not None and not self._lost_connection

    async def _lost(self, exc: Exception) -> None:
        self._lost_connection = True
        if self.on_lost is not None:
            await self.on_lost(exc)

    async def close(self) -> None:
        client, self.client = self.client, None
        self._lost_connection = False
        self.resolved.clear()
        if client is None:
            return
        client.connection_lost_callback = None
        try:
            await client.disconnect()
        except Exception as exc:  # a dead peer cannot be told goodbye; the socket closes anyway
            log.debug("PLC %s: disconnect: %r", self.plc.id, exc)

    def _connected(self) -> Client:
        if self.client is None:
            raise PlcError(f"PLC {self.plc.id}: not connected to {self.url}")
        return self.client

    # -- nodes --------------------------------------------------------------------------------
    async def _resolve(self, points: list[Point]) -> None:
        """Each point's node and its data type; the unusable ones listed with the reason."""
        client = self._connected()
        self.unusable.clear()
        nodes: list[tuple[Point, Node]] = []
        for point in points:
            if point.node_id:
                try:
                    nodes.append((point, client.get_node(ua.NodeId.from_string(point.node_id))))
                except (ValueError, UaError) as exc:
                    self.unusable[point.name] = f"node_id {point.node_id!r} is no NodeId ({exc})"
                continue
            assert point.browse_path
            steps = [s for s in point.browse_path.split("/") if s]
            try:
                node = await client.nodes.objects.get_child(steps)
            except UaStatusCodeError as exc:
                self.unusable[point.name] = (
                    f"browse path {point.browse_path!r} not found on the server ({exc})"
                )
                continue
            except ValueError as exc:
                self.unusable[point.name] = f"browse path {point.browse_path!r}: {exc}"
                continue
            nodes.append((point, node))
        if not nodes:
            return
        results = await client.read_attributes([n for _, n in nodes], AttributeIds.DataType)
        for (point, node), result in zip(nodes, results, strict=True):
            where = point.node_id or point.browse_path
            status = result.StatusCode
            if status is not None and not status.is_good():
                self.unusable[point.name] = f"node {where} unknown to the server ({status.name})"
                continue
            data_type = result.Value.Value if result.Value is not None else None
            expected = VARIANT_TYPES[point.type]
            if not isinstance(data_type, ua.NodeId) or type_name(data_type) != point.type:
                have = type_name(data_type) if isinstance(data_type, ua.NodeId) else "none"
                self.unusable[point.name] = (
                    f"node {where} is of type {have} on the server, the plant file says "
                    f"{point.type}"
                )
                continue
            self.resolved[point.name] = ResolvedPoint(point, node, expected)

    def _resolved(self, point: Point) -> ResolvedPoint:
        found = self.resolved.get(point.name)
        if found is None:
            why = self.unusable.get(point.name, "not in the plant file")
            raise PlcError(f"PLC {self.plc.id}: {point.name}: {why}")
        return found

    # -- reads and writes ---------------------------------------------------------------------
    async def read_values(
        self, points: list[Point]
    ) -> dict[str, tuple[float | None, str | None, datetime]]:
        """Each point's value (None if not good), why it is not good, and its timestamp
        (the source's, else the server's, else now)."""
        await self.connect()
        client = self._connected()
        out: dict[str, tuple[float | None, str | None, datetime]] = {}
        now = datetime.now(UTC)
        readable = []
        for point in points:
            if point.name in self.resolved:
                readable.append(self.resolved[point.name])
            else:
                out[point.name] = (None, self.unusable.get(point.name, "unknown point"), now)
        if not readable:
            return out
        try:
            results = await client.read_attributes([r.node for r in readable])
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            await self.close()
            raise PlcError(f"PLC {self.plc.id}: read at {self.url}: {exc!r}") from exc
        for r, dv in zip(readable, results, strict=True):
            out[r.point.name] = sample(dv, r.variant_type, now)
        return out

    async def read_points(self, points: list[Point]) -> dict[str, float]:
        values = await self.read_values(points)
        out: dict[str, float] = {}
        for name, (value, why, _when) in values.items():
            if value is None:
                raise PlcError(f"PLC {self.plc.id}: {name}: {why}")
            out[name] = value
        return out

    async def write_point(self, point: Point, value: float) -> None:
        await self.connect()
        resolved = self._resolved(point)
        where = f"PLC {self.plc.id}: write {point.name} ({resolved.node.nodeid.to_string()})"
        variant = encode(resolved.variant_type, value, where)
        try:
            # Value only: servers may refuse a client's timestamps (BadWriteNotSupported).
            await resolved.node.write_attribute(AttributeIds.Value, ua.DataValue(variant))
        except UaStatusCodeError as exc:
            raise PlcError(f"{where}: the server answered {exc}") from exc
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            await self.close()
            raise PlcError(f"{where}: {exc!r}") from exc


def sample(
    dv: ua.DataValue, expected: ua.VariantType, now: datetime
) -> tuple[float | None, str | None, datetime]:
    """One DataValue as (value, None, when) or (None, why it is not a sample, when)."""
    when = dv.SourceTimestamp or dv.ServerTimestamp or now
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    status = dv.StatusCode
    if status is not None and not status.is_good():
        return None, f"status {status.name}", when
    variant = dv.Value
    if variant is None or variant.VariantType is not expected:
        have = variant.VariantType.name if variant is not None else "no value"
        return None, f"value of type {have}, the plant file says {TYPE_NAMES[expected]}", when
    value = as_float(variant.Value)
    if value is None:
        return None, f"value {variant.Value!r} is no number", when
    return value, None, when


async def open_client(
    url: str,
    settings: OpcUa,
    *,
    who: str,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 4.0,
    on_lost: LostCallback | None = None,
) -> Client:
    """A connected asyncua client: security and trust as `settings` say, the user's session.
    Every failure is a PlcError that starts with `who` and says what to check."""
    # The watchdog reads the server state this often and gives up on an answer after as
    # long: 5 s, because a busy client's reply waits behind its publish responses, and a 1 s
    # watchdog drops a healthy connection under load. A closed socket is noticed at once.
    client = Client(url, timeout=timeout_s, watchdog_intervall=WATCHDOG_S)
    client.name = client.description = f"FactoryLM ({who})"
    # Ten minutes: what asyncua's server grants at most; asking for asyncua's default hour
    # only earns a warning on every connect.
    client.session_timeout = 600_000
    if username:
        client.set_user(username)
        if password is not None:
            client.set_password(password)
    try:
        if settings.security != "none":
            await _secure(client, url, settings, who)
        client.connection_lost_callback = on_lost
        await client.connect(auto_reconnect=False)
    except PlcError:
        raise
    except UaStatusCodeError as exc:
        if settings.security != "none" and exc.code in CERTIFICATE_REFUSED:
            raise PlcError(
                f"{who}: {url} does not trust this client's certificate "
                f"{settings.certificate} ({exc}): add it to the server's trusted certificates"
            ) from exc
        raise PlcError(f"{who}: {url} refused the session: {exc}") from exc
    except (OSError, TimeoutError, UaError) as exc:
        raise PlcError(f"{who}: no OPC UA answer at {url}: {exc!r}") from exc
    return client


async def _secure(client: Client, url: str, settings: OpcUa, who: str) -> None:
    """Basic256Sha256 with the plant file's client certificate, after checking that the
    server's certificate is on the trust list (asyncua alone would take any)."""
    mode = (
        ua.MessageSecurityMode.Sign
        if settings.security == "sign"
        else ua.MessageSecurityMode.SignAndEncrypt
    )
    policy = security_policies.SecurityPolicyBasic256Sha256
    trust = TrustList(settings.trust)
    endpoints = await client.connect_and_get_server_endpoints()
    offered = [e for e in endpoints if e.SecurityMode == mode and e.SecurityPolicyUri == policy.URI]
    if not offered:
        have = sorted(
            {f"{e.SecurityPolicyUri.rpartition('#')[2]}/{e.SecurityMode.name}" for e in endpoints}
        )
        raise PlcError(
            f"{who}: {url} offers no Basic256Sha256 {mode.name} endpoint "
            f"(it offers {', '.join(have)})"
        )
    try:
        server_cert = x509.load_der_x509_certificate(_first_der(offered[0].ServerCertificate))
    except ValueError as exc:
        raise PlcError(f"{who}: {url} sent no readable certificate ({exc})") from exc
    why = trust.untrusted(server_cert)
    if why is not None:
        raise PlcError(
            f"{who}: the server certificate of {url}, {describe_certificate(server_cert)}, "
            f"is not trusted: {why}"
        )
    assert settings.certificate and settings.private_key  # the plant file checks it
    try:
        own = _load_certificate(Path(settings.certificate))
    except (OSError, ValueError) as exc:
        raise PlcError(f"{who}: client certificate {settings.certificate}: {exc}") from exc
    # The server checks our application URI against the certificate's.
    try:
        san = own.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if uris:
            client.application_uri = uris[0]
    except x509.ExtensionNotFound:
        pass
    try:
        await client.set_security(
            policy,
            settings.certificate,
            settings.private_key,
            server_certificate=server_cert.public_bytes(serialization.Encoding.DER),
            mode=mode,
        )
    except (OSError, ValueError, TypeError) as exc:
        raise PlcError(
            f"{who}: client certificate {settings.certificate} or key {settings.private_key}: {exc}"
        ) from exc


# -- browsing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BrowsedVariable:
    browse_path: str  # "2:Line1/2:Temp"
    node_id: str
    data_type: str  # a plant-file type name, or the server's name for it
    writable: bool

    @property
    def usable(self) -> bool:
        return self.data_type in VARIANT_TYPES


async def browse(
    client: Client, start: str | None = None, *, max_nodes: int = 5000, max_depth: int = 10
) -> list[BrowsedVariable]:
    """The variables under Objects (or under the browse path `start`), depth first, bounded:
    the server's own diagnostics (ns=0) are skipped unless `start` points into them."""
    root = client.nodes.objects
    prefix: list[str] = []
    if start:
        prefix = [s for s in start.split("/") if s]
        root = await client.nodes.objects.get_child(prefix)
    found: list[BrowsedVariable] = []
    visited = 0
    stack: list[tuple[Node, list[str], int]] = [(root, prefix, 0)]
    while stack and visited < max_nodes:
        node, path, depth = stack.pop()
        children = await node.get_children_descriptions()
        for ref in reversed(children):
            visited += 1
            qn = ref.BrowseName
            if not start and depth == 0 and qn.NamespaceIndex == 0:
                continue  # the Server object and its diagnostics
            child_path = [*path, f"{qn.NamespaceIndex}:{qn.Name}"]
            child = client.get_node(ref.NodeId)
            if ref.NodeClass == ua.NodeClass.Variable:
                data_type = await child.read_data_type()
                access = await child.read_attribute(AttributeIds.UserAccessLevel)
                level = access.Value.Value if access.Value is not None else 0
                found.append(
                    BrowsedVariable(
                        "/".join(child_path),
                        ref.NodeId.to_string(),
                        type_name(data_type),
                        bool(level & ua.AccessLevel.CurrentWrite.mask),
                    )
                )
            elif ref.NodeClass == ua.NodeClass.Object and depth + 1 < max_depth:
                stack.append((child, child_path, depth + 1))
    found.sort(key=lambda v: v.browse_path)
    return found
