from __future__ import annotations

import pytest

from factorylm.drivers.registers import MAX_REGISTERS_PER_READ, decode, encode, plan_reads
from factorylm.plant import Point


def point(**kw: object) -> Point:
    return Point.model_validate({"name": "p", "register": 0, **kw})


@pytest.mark.parametrize(
    ("kind", "value", "scale"),
    [
        ("u16", 1750, 1),
        ("i16", -40.5, 0.1),
        ("u32", 123456789, 1),
        ("i32", -7654321, 1),
        ("f32", 3.25, 1),
        ("u16", 2.37, 0.01),
    ],
)
def test_round_trip(kind: str, value: float, scale: float) -> None:
    p = point(type=kind, scale=scale)
    assert decode(p, encode(p, value)) == pytest.approx(value, abs=scale / 2)


def test_word_order_swaps_registers() -> None:
    big = point(type="u32")
    little = point(type="u32", word_order="little")
    assert encode(big, 0x00010002) == [0x0001, 0x0002]
    assert encode(little, 0x00010002) == [0x0002, 0x0001]
    assert decode(little, [0x0002, 0x0001]) == 0x00010002


def test_signed_decoding() -> None:
    assert decode(point(type="i16"), [0xFFFF]) == -1
    assert decode(point(type="u16"), [0xFFFF]) == 65535


def test_plan_reads_merges_nearby_and_splits_far_points() -> None:
    pts = [
        Point.model_validate({"name": "a", "register": 0}),
        Point.model_validate({"name": "b", "register": 3, "type": "f32"}),
        Point.model_validate({"name": "c", "register": 200}),
    ]
    blocks = plan_reads(pts)
    assert [(b.start, b.count) for b in blocks] == [(0, 5), (200, 1)]
    assert blocks[0].values([7, 0, 0, *encode(pts[1], 1.5)]) == {"a": 7.0, "b": 1.5}


def test_plan_reads_respects_the_protocol_limit() -> None:
    pts = [Point.model_validate({"name": f"r{i}", "register": i * 10}) for i in range(30)]
    blocks = plan_reads(pts)
    assert all(b.count <= MAX_REGISTERS_PER_READ for b in blocks)
    assert sum(len(b.points) for b in blocks) == 30


def test_a_block_decodes_every_point_type_at_its_offset_in_one_read() -> None:
    points = [
        point(name="speed", register=0, type="u16", scale=0.1),
        point(name="delta", register=1, type="i16"),
        point(name="count", register=4, type="u32"),  # registers 2-3 unmapped
        point(name="temp_be", register=6, type="f32"),
        point(name="temp_le", register=8, type="f32", word_order="little"),
    ]
    (block,) = plan_reads(points)
    # 1234 → 123.4; 0xFFFE → -2; 0x0001_0002 → 65538; 1.5 = 0x3FC0_0000 (big, then low first)
    words = [1234, 0xFFFE, 7, 7, 0x0001, 0x0002, 0x3FC0, 0x0000, 0x0000, 0x3FC0]
    assert block.values(words) == {
        "speed": pytest.approx(123.4),
        "delta": -2.0,
        "count": 65538.0,
        "temp_be": 1.5,
        "temp_le": 1.5,
    }
