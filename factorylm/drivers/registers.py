"""Modbus register encoding: typed, scaled values to and from 16-bit words, and read planning."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from factorylm.plant import Point

MAX_REGISTERS_PER_READ = 125  # Modbus limit for function 0x03
_MAX_GAP = 16  # reading a few unused registers beats a second round trip

_FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f"}


def decode(point: Point, words: Sequence[int]) -> float:
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


_CODES = {"u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f"}


@dataclass(frozen=True)
class ReadBlock:
    start: int
    count: int
    points: tuple[Point, ...]
    _words: struct.Struct = field(init=False, repr=False, compare=False)
    _fast: struct.Struct = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _scales: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _slow: tuple[Point, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The whole block decoded by one precompiled struct: the words packed back to the
        # bytes they came as, then every point unpacked at its offset in a single call (per
        # point decoding was most of the ingest's own cost per sample). Points whose 32-bit
        # words come low word first, and points that overlap, are decoded one by one.
        fields: list[str] = []
        names: list[str] = []
        scales: list[float] = []
        slow: list[Point] = []
        at = 0
        for point in sorted(self.points, key=lambda p: p.address or 0):
            assert point.address is not None
            lo = point.address - self.start
            swapped = point.register_count == 2 and point.word_order == "little"
            if swapped or lo < at or point.type not in _CODES:
                slow.append(point)
                continue
            fields.append("x" * (2 * (lo - at)) + _CODES[point.type])
            names.append(point.name)
            scales.append(point.scale)
            at = lo + point.register_count
        object.__setattr__(self, "_words", struct.Struct(f">{self.count}H"))
        object.__setattr__(self, "_fast", struct.Struct(">" + "".join(fields)))
        object.__setattr__(self, "_names", tuple(names))
        object.__setattr__(self, "_scales", tuple(scales))
        object.__setattr__(self, "_slow", tuple(slow))

    def values(self, words: Sequence[int]) -> dict[str, float]:
        fast = self._fast.unpack_from(self._words.pack(*words))
        out = {
            name: float(value) * scale
            for name, value, scale in zip(self._names, fast, self._scales, strict=True)
        }
        for point in self._slow:
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
