"""Finding 1, the client's half: the Temporal client had no TLS or API-key options, so a
deployment could only speak plain TCP to Temporal. Now FACTORYLM_TEMPORAL_TLS_* give mTLS and
FACTORYLM_TEMPORAL_API_KEY an API key. Tried against a real mTLS endpoint: a TLS proxy that
demands a client certificate signed by the plant's CA, in front of the real dev server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.client import Client

from factorylm.settings import Settings, SettingsError
from factorylm.temporal_client import TemporalUnavailable, connect, tls_config
from helpers import free_port


def _cert(
    name: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: x509.Name | None, *, ca: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _write(
    path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.asynccontextmanager
async def mtls_proxy(tmp_path: Path, upstream: str) -> AsyncIterator[tuple[int, Path, Path, Path]]:
    """(port, CA cert, client cert, client key) of an mTLS front for `upstream`."""
    ca_key, ca = _cert("plant-ca", None, None, ca=True)
    ca_path, _ = _write(tmp_path / "ca", ca_key, ca)
    srv_key, srv = _cert("temporal.plant", ca_key, ca.subject, ca=False)
    srv_cert, srv_key_path = _write(tmp_path / "server", srv_key, srv)
    cli_key, cli = _cert("factorylm-worker", ca_key, ca.subject, ca=False)
    cli_cert, cli_key_path = _write(tmp_path / "client", cli_key, cli)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_path))
    context.load_cert_chain(srv_cert, srv_key_path)
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
    context.set_alpn_protocols(["h2"])
    host, port_text = upstream.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port_text))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    try:
        yield port, ca_path, cli_cert, cli_key_path
    finally:
        server.close()


async def test_the_client_speaks_mtls_with_the_plant_ca_and_its_certificate(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    upstream = client.service_client.config.target_host
    async with mtls_proxy(tmp_path, upstream) as (port, ca, cert, key):
        s = settings.model_copy(
            update={
                "temporal_address": f"127.0.0.1:{port}",
                "temporal_tls_ca": ca,
                "temporal_tls_cert": cert,
                "temporal_tls_key": key,
                "temporal_tls_server_name": "temporal.plant",
            }
        )
        secured = await connect(s)
        assert await secured.service_client.check_health()
        # Without a client certificate the same endpoint refuses the connection.
        no_cert = s.model_copy(update={"temporal_tls_cert": None, "temporal_tls_key": None})
        with pytest.raises(TemporalUnavailable):
            await connect(no_cert)
        # A server the plant CA did not sign is not trusted.
        _, other_ca = _cert("other-ca", None, None, ca=True)
        other = tmp_path / "other-ca.crt"
        other.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
        with pytest.raises(TemporalUnavailable):
            await connect(s.model_copy(update={"temporal_tls_ca": other}))


def test_tls_settings_that_cannot_work_are_named(tmp_path: Path, settings: Settings) -> None:
    assert tls_config(settings) is False  # the embedded dev server: plain TCP on loopback
    half = settings.model_copy(update={"temporal_tls_cert": tmp_path / "c.crt"})
    with pytest.raises(SettingsError, match="go together"):
        tls_config(half)
    missing = settings.model_copy(update={"temporal_tls_ca": tmp_path / "absent.crt"})
    with pytest.raises(SettingsError, match="FACTORYLM_TEMPORAL_TLS_CA"):
        tls_config(missing)
