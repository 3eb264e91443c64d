"""OPC UA's own rules, without a server: the trust list (pinned, CA-issued, expired, unknown),
values in a node's type, the plant file's checks, and the browse command's names and URLs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from app.commands.plc import normalise_url, point_name
from dev.simulator.opcua import make_certificate
from factorylm.drivers import PlcError
from factorylm.drivers.opcua import TrustList, _first_der, encode, type_name
from factorylm.plant import Plant


def _cert(
    name: str,
    *,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    days: tuple[int, int] = (-1, 30),
    ca: bool = False,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    signer_name, signer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_the_trust_list_takes_pinned_and_ca_issued_certificates_only(tmp_path: Path) -> None:
    ca = _cert("plant-ca", ca=True)
    issued, _ = _cert("oven-server", issuer=ca)
    pinned, _ = _cert("pinned-server")
    stranger, _ = _cert("stranger")
    (tmp_path / "trusted").mkdir()
    _write(tmp_path / "trusted" / "ca.pem", ca[0])
    trust = TrustList([str(tmp_path / "trusted"), _write(tmp_path / "pinned.pem", pinned)])
    assert trust.untrusted(issued) is None
    assert trust.untrusted(pinned) is None
    assert trust.untrusted(ca[0]) is None
    why = trust.untrusted(stranger)
    assert why is not None and "not in, nor issued by" in why and str(tmp_path) in why


def test_an_expired_certificate_is_not_trusted_even_when_pinned(tmp_path: Path) -> None:
    expired, _ = _cert("old-server", days=(-60, -1))
    trust = TrustList([_write(tmp_path / "old.pem", expired)])
    why = trust.untrusted(expired)
    assert why is not None and why.startswith("it is valid from")


def test_a_file_in_the_trust_list_that_is_no_certificate_is_named(tmp_path: Path) -> None:
    cert, _key = make_certificate(tmp_path, "server", "urn:test")
    (tmp_path / "notes.txt").write_text("not a certificate")
    with pytest.raises(PlcError, match=r"trust list entry .*notes\.txt: not a certificate"):
        TrustList([str(tmp_path)])
    # The simulator's layout keeps its key in private/: its directory is a valid trust list.
    (tmp_path / "notes.txt").unlink()
    assert (
        TrustList([str(tmp_path)]).untrusted(x509.load_pem_x509_certificate(cert.read_bytes()))
        is None
    )


def test_the_first_certificate_of_a_der_chain_is_the_servers() -> None:
    leaf, _ = _cert("leaf")
    other, _ = _cert("issuer")
    der = leaf.public_bytes(serialization.Encoding.DER)
    chain = der + other.public_bytes(serialization.Encoding.DER)
    assert _first_der(chain) == der and _first_der(der) == der


@pytest.mark.parametrize(
    ("vt", "value", "held"),
    [
        (ua.VariantType.Int32, 120.0, 120),
        (ua.VariantType.Byte, 255.0, 255),
        (ua.VariantType.Boolean, 1.0, True),
        (ua.VariantType.Double, 42.5, 42.5),
    ],
)
def test_a_value_is_encoded_in_the_nodes_type(
    vt: ua.VariantType, value: float, held: object
) -> None:
    variant = encode(vt, value, "w")
    assert variant.VariantType is vt and variant.Value == held and type(variant.Value) is type(held)


@pytest.mark.parametrize(
    ("vt", "value"),
    [
        (ua.VariantType.Int32, 12.5),
        (ua.VariantType.Byte, 256.0),
        (ua.VariantType.UInt16, -1.0),
        (ua.VariantType.Boolean, 0.5),
        (ua.VariantType.Int64, float("nan")),
    ],
)
def test_a_value_the_nodes_type_cannot_hold_is_refused(vt: ua.VariantType, value: float) -> None:
    with pytest.raises(PlcError, match="PLC x: write sp"):
        encode(vt, value, "PLC x: write sp")


def test_data_type_names_are_the_plant_files() -> None:
    # i=11 Double, i=1 Boolean, i=290 Duration (OPC UA Part 6's NodeIds)
    assert type_name(ua.NodeId.from_string("i=11")) == "double"
    assert type_name(ua.NodeId.from_string("i=1")) == "boolean"
    assert type_name(ua.NodeId.from_string("i=290")) == "i=290"  # a subtype: not a match
    assert type_name(ua.NodeId.from_string("ns=3;i=3002")) == "ns=3;i=3002"


def _plc(**fields: object) -> dict[str, object]:
    metric = {"name": "t", "node_id": "ns=2;s=t", "type": "double"} | fields.pop("metric", {})  # type: ignore[operator]
    return {"id": "oven", "vendor": "x", "protocol": "opcua", "metrics": [metric], **fields}


@pytest.mark.parametrize(
    ("plc", "error"),
    [
        (_plc(metric={"node_id": None}), "needs node_id or browse_path"),
        (_plc(metric={"browse_path": "2:A/2:t"}), "node_id or browse_path, not both"),
        (_plc(metric={"type": "u16"}), "is not a opcua type"),
        (_plc(opcua={"security": "sign"}), "needs certificate, private_key and trust"),
        (_plc(metric={"deadband": -1}), "greater than or equal to 0"),
    ],
)
def test_the_plant_file_refuses_what_an_opcua_point_cannot_be(
    plc: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        Plant.model_validate({"plcs": [plc]})


def test_browse_names_points_from_the_last_browse_step_uniquely() -> None:
    taken: set[str] = set()
    assert point_name("2:Oven/2:ZoneTemp", taken) == "zone_temp"
    assert point_name("3:Line2/3:ZoneTemp", taken) == "zone_temp_2"
    assert point_name("2:Oven/2:1st stage", taken) == "p_1st_stage"


def test_browse_takes_opc_tcp_and_opcua_urls_only() -> None:
    assert normalise_url("opcua://10.0.4.20:4841/srv") == "opc.tcp://10.0.4.20:4841/srv"
    assert normalise_url("opc.tcp://plc") == "opc.tcp://plc:4840"
    with pytest.raises(ValueError, match=r"no opc\.tcp://host:port URL"):
        normalise_url("http://plc:4840")
