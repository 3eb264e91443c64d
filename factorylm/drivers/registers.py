"""Modbus register encoding: typed, scaled values to and from 16-bit words, and read planning."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from factorylm.plant import Point

MAX_REGISTERS_PER_READ = 125  # Modbus limit for function 0x03
_MAX_GAP = 16  # reading a few unused registers beats a second round trip

_FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f"}


def decode(point: Point, words: list[int]) -> float:
    fmt = _FORMATS.get(point.type)
    if fmt is None:
        raise ValueError(f"{point.name}: type {point.type} is not a Modbus register type")
    if point.register_count == 2 and point.word_order == "little":
        words = [words[1], words[0]]
    raw = struct.unpack(fmt, b"".join(w.to_bytes(2, "big") for w in words))[0]
    return float(raw) * point.scale


def encode(point: Point, value: float) -> list[int]:
    fmt = _FORMATS.get(point.type)
    if fmt is None:
        raise ValueError(f"{point.name}: type {point.type} is not a Modbus register type")
    raw_value = value / point.scale
    packed = struct.pack(fmt, raw_value if point.type == "f32" else round(raw_value))
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    if len(words) == 2 and point.word_order == "little":
        words = [words[1], words[0]]
    return words


@dataclass(frozen=True)
class ReadBlock:
    start: int
    count: int
    points: tuple[Point, ...]

    def values(self, words: list[int]) -> dict[str, float]:
        out = {}
        for point in self.points:
            assert point.address is not None
            lo = point.address - self.start
            out[point.name] = decode(point, words[lo : lo + point.register_count])
        return out


def plan_reads(points: list[Point]) -> list[ReadBlock]:
    """Group points into as few holding-register reads as the protocol allows."""
    ordered = sorted(points, key=lambda p: p.address or 0)
    blocks: list[ReadBlock] = []
    start = end = -1
    members: list[Point] = []
    for point in ordered:
        assert point.address is not None
        p_end = point.address + point.register_count
        if members and point.address - end <= _MAX_GAP and p_end - start <= MAX_REGISTERS_PER_READ:
            end = max(end, p_end)
            members.append(point)
            continue
        if members:
            blocks.append(ReadBlock(start, end - start, tuple(members)))
        start, end, members = point.address, p_end, [point]
    if members:
        blocks.append(ReadBlock(start, end - start, tuple(members)))
    return blocks
