"""The Sparkplug B codec against payload bytes written by hand from the protobuf wire format,
and the sequence rules a host applies to an edge node."""

from __future__ import annotations

import pytest

from factorylm import sparkplug as sp


def test_a_hand_encoded_payload_decodes_to_its_seq_alias_and_float() -> None:
    # Payload{metrics: [Metric{alias: 2, float_value: 1.5}], seq: 5}:
    # field 2 (metrics, length-delimited, 7 bytes) = alias (field 2, varint 2) + float_value
    # (field 12, 32-bit: tag 0x65, 1.5f little-endian 00 00 c0 3f); field 3 (seq) varint 5.
    data = bytes.fromhex("1207 1002 650000c03f 1805".replace(" ", ""))
    payload = sp.decode(data)
    assert payload.seq == 5 and payload.timestamp_ms is None
    assert [(m.name, m.alias, m.value) for m in payload.metrics] == [(None, 2, 1.5)]


def test_signed_integers_travel_as_twos_complement() -> None:
    # Metric{name: "t", datatype: 3 (Int32), int_value: 0xFFFFFFFE} is -2.
    metric = bytes.fromhex("0a0174" + "2003" + "50feffffff0f")
    payload = sp.decode(bytes([0x12, len(metric)]) + metric)
    assert payload.metrics[0].value == -2.0
    encoded = sp.encode([sp.OutMetric("t", sp.DataType.INT32, -2)], seq=0, timestamp_ms=1)
    assert sp.decode(encoded).metrics[0].value == -2.0


@pytest.mark.parametrize(
    "data", [b"\xff\xff\xff", b"\x12\x7f\x01", b"\x0a" * 10, bytes(sp.MAX_PAYLOAD + 1)]
)
def test_what_is_not_a_payload_is_a_sparkplug_error(data: bytes) -> None:
    with pytest.raises(sp.SparkplugError):
        sp.decode(data)


def test_a_null_metric_has_no_value() -> None:
    encoded = sp.encode([sp.OutMetric("x", sp.DataType.DOUBLE, None)], seq=1)
    metric = sp.decode(encoded).metrics[0]
    assert metric.is_null and metric.value is None


def test_an_integer_metric_refuses_a_fraction() -> None:
    with pytest.raises(sp.SparkplugError, match="not an integer"):
        sp.encode([sp.OutMetric("x", sp.DataType.INT16, 1.5)], seq=1)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("spBv1.0/g/NDATA/n", sp.Topic("g", sp.MessageType.NDATA, "n")),
        ("spBv1.0/g/DDATA/n/d", sp.Topic("g", sp.MessageType.DDATA, "n", "d")),
    ],
)
def test_topics_parse(topic: str, expected: sp.Topic) -> None:
    assert sp.parse_topic(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize(
    "topic", ["spBv1.0/g/DDATA/n", "spBv1.0/g/NDATA/n/d", "spAv1.0/g/NDATA/n", "spBv1.0/g/XDATA/n"]
)
def test_malformed_topics_are_refused(topic: str) -> None:
    with pytest.raises(sp.SparkplugError):
        sp.parse_topic(topic)


def test_sequence_numbers_wrap_at_256_and_a_repeat_is_a_duplicate() -> None:
    session = sp.NodeSession("g", "n")
    assert session.check_seq(0) == "no birth seen"
    session.birth(None, sp.SpPayload(timestamp_ms=None, seq=255, metrics=()))
    assert session.check_seq(0) is None
    assert session.check_seq(255) == "duplicate"
    assert session.check_seq(2) == "sequence gap: expected 0, got 2"


def test_a_device_the_host_does_not_read_keeps_no_aliases_but_counts_in_the_sequence() -> None:
    session = sp.NodeSession("g", "n")
    session.birth(None, sp.SpPayload(timestamp_ms=None, seq=0, metrics=()))
    other = sp.SpPayload(
        timestamp_ms=None, seq=1, metrics=(sp.SpMetric("x", 1, sp.DataType.DOUBLE, 1.0),)
    )
    assert session.check_seq(1) is None
    session.birth("other", other, record=False)
    assert session.aliases == {} and session.seq == 1
    assert session.check_seq(2) is None
