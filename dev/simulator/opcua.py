"""A simulated OPC UA server on asyncua's own `Server`: one variable per plant-file point, of the
point's data type, at its NodeId (under an object named after the PLC) or at its browse path.

It offers the None endpoint and Basic256Sha256 Sign and SignAndEncrypt. Its certificate and key
are generated with `cryptography` when it first starts, into `cert_dir` (a temporary directory
unless the caller or FACTORYLM_SIM_OPCUA_DIR names one), and kept there across restarts so a
client that trusts it once keeps trusting it; no key is ever committed. Client certificates are
accepted as asyncua's server does by default, or only those in `client_trust`. With `username` and `password_env` on the PLC it
accepts only that user.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dev.simulator.peer import SimulatedPeer
from factorylm.drivers.opcua import VARIANT_TYPES, as_float
from factorylm.plant import Plc, Point, Protocol

log = logging.getLogger(__name__)

NAMESPACE = "urn:factorylm:simulator"
SERVER_URI = "urn:factorylm:simulator:opcua"


def make_certificate(
    directory: Path, name: str, application_uri: str, hostnames: Sequence[str] = ("localhost",)
) -> tuple[Path, Path]:
    """A self-signed application certificate (as OPC UA Part 6 wants it: the application URI in
    the subject alternative names, signing and encryption key usages) and its key, as PEM:
    directory/name.pem and directory/private/name.key.pem."""
    # The key apart from the certificate (OPC UA's own/private layout): the certificate's
    # directory can then be handed to a client as a trust list as it is.
    (directory / "private").mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / "private" / f"{name}.key.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hostnames:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class _OneUser(UserManager):
    """asyncua's user manager for a server with one user and password."""

    def __init__(self, username: str, password: str) -> None:
        self._username, self._password = username, password

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username == self._username and password == self._password:
            return User(role=UserRole.User, name=username)
        return None


class SimulatedOpcUaPlc(SimulatedPeer):
    protocol_label = "OPC UA"

    def __init__(
        self,
        plc: Plc,
        *,
        seed: int = 0,
        tick_s: float | None = None,
        cert_dir: Path | None = None,
        client_trust: Sequence[Path] | None = None,
    ) -> None:
        if plc.protocol is not Protocol.OPCUA:
            raise ValueError(f"{plc.id}: not an OPC UA PLC")
        super().__init__(plc, seed=seed, tick_s=tick_s)
        env_dir = os.environ.get("FACTORYLM_SIM_OPCUA_DIR")
        self.cert_dir = cert_dir or (
            Path(env_dir) if env_dir else Path(tempfile.mkdtemp(prefix=f"opcua-{plc.id}-"))
        )
        self.certificate = self.cert_dir / "server.pem"
        self._key = self.cert_dir / "private" / "server.key.pem"
        self._server: Server | None = None
        self._nodes: dict[str, tuple[Node, ua.VariantType]] = {}
        self._ns = 2
        self._retained: dict[str, float] = {}  # setpoints across an offline spell
        # The client certificates it accepts (files); None: any, as asyncua's server does.
        self._client_trust = (
            None
            if client_trust is None
            else {
                x509.load_pem_x509_certificate(p.read_bytes()).public_bytes(
                    serialization.Encoding.DER
                )
                for p in client_trust
            }
        )

    @property
    def address(self) -> str:
        path = self.plc.opcua.path if self.plc.opcua else ""
        return f"opc.tcp://{self.plc.host}:{self.plc.tcp_port}{path}"

    async def _serve(self) -> None:
        if not self.certificate.exists():
            make_certificate(
                self.cert_dir,
                "server",
                SERVER_URI,
                (socket.gethostname(), "localhost", self.plc.host),
            )
        users = None
        if self.plc.username:
            password = os.environ.get(self.plc.password_env or "", "")
            users = _OneUser(self.plc.username, password)
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(self.address)
        server.set_server_name(f"FactoryLM simulated {self.plc.id}")
        await server.set_application_uri(SERVER_URI)
        server.set_security_policy(
            [
                ua.SecurityPolicyType.NoSecurity,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        )
        await server.load_certificate(str(self.certificate))
        await server.load_private_key(str(self._key))
        if self._client_trust is not None:
            server.set_certificate_validator(self._check_client)
        self._ns = await server.register_namespace(NAMESPACE)
        await self._build(server)
        await server.start()
        self._server = server

    async def _check_client(self, cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        assert self._client_trust is not None
        if cert.public_bytes(serialization.Encoding.DER) not in self._client_trust:
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

    async def _build(self, server: Server) -> None:
        self._nodes.clear()
        device = await server.nodes.objects.add_object(self._ns, self.plc.id)
        folders: dict[str, Node] = {}
        for point in [*self.plc.metrics, *self.plc.setpoints]:
            vt = VARIANT_TYPES[point.type]
            initial = ua.Variant(False if vt is ua.VariantType.Boolean else 0, vt)
            if vt in (ua.VariantType.Float, ua.VariantType.Double):
                initial = ua.Variant(0.0, vt)
            if point.node_id:
                var = await device.add_variable(
                    ua.NodeId.from_string(point.node_id), f"{self._ns}:{point.name}", initial
                )
            else:
                assert point.browse_path
                steps = [s for s in point.browse_path.split("/") if s]
                parent = server.nodes.objects
                for i, step in enumerate(steps[:-1]):
                    key = "/".join(steps[: i + 1])
                    if key not in folders:
                        folders[key] = await parent.add_object(*_qualified(step, self._ns))
                    parent = folders[key]
                var = await parent.add_variable(*_qualified(steps[-1], self._ns), initial)
            if point in self.plc.setpoints:
                await var.set_writable()
            self._nodes[point.name] = (var, vt)

    async def _unserve(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _set_answering(self, answering: bool) -> None:
        # Off the network: the server goes away (clients see the connection drop) and comes
        # back fresh, as after a power cycle: new sessions, no subscriptions.
        # Setpoints are retentive, as in a PLC: what they held comes back with the server.
        if answering:
            await self._serve()
            await self._store([(s, self._retained[s.name]) for s in self.plc.setpoints])
            await self.tick()
        else:
            self._retained = {s.name: await self.read(s.name) for s in self.plc.setpoints}
            await self._unserve()

    async def _store(self, values: Sequence[tuple[Point, float]]) -> None:
        server = self._server
        if server is None:
            return
        now = dt.datetime.now(dt.UTC)
        for point, value in values:
            node, vt = self._nodes[point.name]
            await server.write_attribute_value(
                node.nodeid, _data_value(_typed(vt, value), vt, now, StatusCodes.Good)
            )

    async def store(self, values: Sequence[tuple[Point, float]]) -> None:
        """Set values now, with a good status (what a tick does; the benchmark's server
        loop calls it)."""
        await self._store(values)

    async def put(
        self,
        name: str,
        value: float,
        *,
        when: dt.datetime | None = None,
        status: int = StatusCodes.Good,
    ) -> None:
        """Set a point's value as the server's source would, with its timestamp and status
        code (e.g. BadSensorFailure for a failed sensor). The tick overwrites a metric's value
        on its next refresh unless the metric is held (`hold`)."""
        if self._server is None:
            raise RuntimeError(f"{self.plc.id} is not serving")
        node, vt = self._nodes[name]
        stamp = when or dt.datetime.now(dt.UTC)
        await self._server.write_attribute_value(
            node.nodeid, _data_value(_typed(vt, value), vt, stamp, status)
        )

    def hold(self, name: str) -> None:
        """Stop the tick from refreshing a metric (so what `put` set stays)."""
        self.signals.pop(name, None)

    async def tick(self) -> None:
        values = []
        for metric in self.plc.metrics:
            signal = self.signals.get(metric.name)
            value = signal.value() if signal is not None else None
            if value is not None:
                values.append((metric, self._clamp(metric, value)))
        if values:
            await self._store(values)

    async def read(self, name: str) -> float:
        if self._server is None or name not in self._nodes:
            raise KeyError(f"{self.plc.id} has no point {name!r} being served")
        node, _vt = self._nodes[name]
        value = as_float(await node.read_value())
        if value is None:
            raise KeyError(f"{self.plc.id}: {name} holds no number")
        return value


def _qualified(step: str, default_ns: int) -> tuple[int, str]:
    ns, sep, name = step.partition(":")
    return (int(ns), name) if sep and ns.isdigit() else (default_ns, step)


def _typed(vt: ua.VariantType, value: float) -> bool | int | float:
    if vt is ua.VariantType.Boolean:
        return value >= 0.5
    if vt in (ua.VariantType.Float, ua.VariantType.Double):
        return value
    return round(value)


def _data_value(
    value: bool | int | float, vt: ua.VariantType, when: dt.datetime, status: int
) -> ua.DataValue:
    return ua.DataValue(
        ua.Variant(value, vt),
        StatusCode=ua.StatusCode(ua.UInt32(status)),
        SourceTimestamp=cast(ua.DateTime, when),
        ServerTimestamp=cast(ua.DateTime, when),
    )
