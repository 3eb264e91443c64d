"""Store-and-forward: samples the database cannot take yet, kept on local disk until it can.

Why append-only segment files and not SQLite: the spool is written in batches and read back
once, in order — exactly what a log does. A batch is one record, checksummed, so a record torn
by a crash or a power cut is recognised and cut off at the next start; whole segments are
deleted once backfilled, which costs nothing; and nothing is written twice (SQLite's WAL would
write every batch twice and still need a format for the rows).

Segment `000000000042.seg` is a run of records, each a 12-byte header (magic, payload length,
CRC-32 of the payload) and a payload of one kind: `K` declares PLC·metric keys (numbered in the
order the segment first meets them), `P` holds samples as (microseconds since the epoch, key
number, value) — 18 bytes a sample, the keys written once a segment. A batch with a key new to
the segment is written as its K and P records in one write, and counts as one record.

Durability: appends are written at once and fsynced at least every `fsync_interval_s`, so a
kill -9 or a power cut loses at most that long of spooled samples. Which records are already in
PostgreSQL is kept in PostgreSQL itself (ingest_spool_progress, updated in the COPY's own
transaction), so a backfill interrupted at any point resumes without a duplicate or a gap.

Bounded by `max_bytes`: when full, the oldest segment goes (the newest data is the one a person
acts on) and every sample in it is counted as dropped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

Sample = tuple[datetime, str, str, float]  # (time, plc_id, metric, value), as the writer's

_MAGIC = b"FLMS"
_HEADER = struct.Struct("<4sII")  # magic, payload length, crc32
_COUNT = struct.Struct("<I")
_KEY_LEN = struct.Struct("<H")
_POINT = struct.Struct("<qHd")  # µs since epoch, key index, value
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_KEYS = 0xFFFF


class SpoolError(RuntimeError):
    """The spool directory cannot be used (its message names it and why)."""


class KeyTable:
    """A segment's PLC·metric keys, numbered in the order it first met them."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []
        self.ids: dict[tuple[str, str], int] = {}

    def declare(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            self.ids[key] = len(self.keys)
            self.keys.append(key)


def _record(payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def encode(batch: list[Sample], table: KeyTable) -> bytes:
    """The batch's records for a segment whose keys so far are `table` (which it extends)."""
    new: list[tuple[str, str]] = []
    seen = set(table.ids)
    for _when, plc_id, metric, _value in batch:
        key = (plc_id, metric)
        if key not in seen:
            seen.add(key)
            new.append(key)
    out = bytearray()
    if new:
        if len(table.keys) + len(new) > _MAX_KEYS:
            raise OverflowError("segment key table full")
        keys = bytearray(b"K" + _COUNT.pack(len(new)))
        for plc_id, metric in new:
            for part in (plc_id.encode(), metric.encode()):
                keys += _KEY_LEN.pack(len(part)) + part
        out += _record(bytes(keys))
        table.declare(new)
    ids = table.ids
    points = bytearray(b"P" + _COUNT.pack(len(batch)))
    pack = _POINT.pack
    for when, plc_id, metric, value in batch:
        delta = when - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        points += pack(micros, ids[(plc_id, metric)], value)
    out += _record(bytes(points))
    return bytes(out)


def _decode_keys(payload: bytes) -> list[tuple[str, str]]:
    (n,) = _COUNT.unpack_from(payload, 1)
    at = 1 + _COUNT.size
    keys: list[tuple[str, str]] = []
    for _ in range(n):
        parts = []
        for _part in range(2):
            (length,) = _KEY_LEN.unpack_from(payload, at)
            at += _KEY_LEN.size
            parts.append(payload[at : at + length].decode())
            at += length
        keys.append((parts[0], parts[1]))
    return keys


def _decode_points(payload: bytes, keys: list[tuple[str, str]]) -> list[Sample]:
    (n,) = _COUNT.unpack_from(payload, 1)
    at = 1 + _COUNT.size
    epoch, micro = _EPOCH, timedelta(microseconds=1)
    return [
        (epoch + micros * micro, *keys[index], value)
        for micros, index, value in _POINT.iter_unpack(payload[at : at + n * _POINT.size])
    ]


@dataclass
class Record:
    segment: int
    offset: int  # of the record's header
    end: int  # offset after the record: the progress to store once it is written
    samples: list[Sample]


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int = 0
    samples: int = 0  # written into it (for what a dropped segment costs)
    first_time: datetime | None = None  # of its first sample
    ends: list[int] = field(default_factory=list)  # record end offsets, in order
    firsts: list[datetime] = field(default_factory=list)  # each record's first sample time
    counts: list[int] = field(default_factory=list)  # each record's samples
    table: KeyTable = field(default_factory=KeyTable)
    # The first record not yet in PostgreSQL, and the samples from it on: kept as records are
    # written and backfilled, so the status (read every minute) costs nothing per record.
    undone: int = 0
    pending: int = 0

    def advance(self, done: int) -> None:
        """Records ending at or before `done` (bytes) are in PostgreSQL."""
        while self.undone < len(self.ends) and self.ends[self.undone] <= done:
            self.pending -= self.counts[self.undone]
            self.undone += 1


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 2 * 1024**3,
        segment_bytes: int = 64 * 1024**2,
        fsync_interval_s: float = 1.0,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self.spooled = 0  # samples appended by this process
        self.dropped = 0  # samples lost to the size bound (or a full disk)
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._dirty = False
        self._last_sync = time.monotonic()
        self._done: dict[int, int] = {}  # segment → offset already in PostgreSQL
        self._lock = -1
        self.id = self._open_directory()
        self._load_segments()

    # -- opening -----------------------------------------------------------------------------
    def _open_directory(self) -> str:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            ident = self.directory / "spool.id"
            if not ident.exists():
                tmp = self.directory / "spool.id.tmp"
                tmp.write_text(uuid.uuid4().hex + "\n")
                os.replace(tmp, ident)
            probe = self.directory / ".write-probe"
            probe.write_bytes(b"x")
            probe.unlink()
            self._lock = os.open(self.directory / "spool.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(
                f"spool directory {self.directory} is not usable ({exc.strerror or exc}); set "
                "FACTORYLM_SPOOL_DIR to a writable directory on a local disk"
            ) from exc
        try:
            # One writer per spool: two processes appending to one segment would garble it.
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise SpoolError(
                f"spool directory {self.directory} is in use by another ingest process; give "
                "each ingest its own FACTORYLM_SPOOL_DIR"
            ) from None
        return ident.read_text().strip()

    def _load_segments(self) -> None:
        for path in sorted(self.directory.glob("*.seg")):
            seg = _Segment(int(path.stem), path)
            valid = 0
            with path.open("rb") as f:
                data = f.read()
            for end, samples in _scan(data, seg.table):
                seg.ends.append(end)
                seg.firsts.append(samples[0][0] if samples else _EPOCH)
                seg.counts.append(len(samples))
                seg.pending += len(samples)
                seg.samples += len(samples)
                valid = end
            if valid < len(data):
                # A record torn by a crash: everything after the last whole record goes.
                log.warning(
                    "spool segment %s: %d torn bytes at its end cut off", path, len(data) - valid
                )
                with path.open("r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            seg.size = valid
            seg.first_time = seg.firsts[0] if seg.firsts else None
            self._segments.append(seg)

    # -- state -------------------------------------------------------------------------------
    @property
    def bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def pending_samples(self) -> int:
        return sum(seg.pending for seg in self._segments)

    def oldest(self) -> datetime | None:
        """The first sample not yet in PostgreSQL (per record, so within one batch)."""
        for seg in self._segments:
            if seg.undone < len(seg.firsts):
                return seg.firsts[seg.undone]
        return None

    def empty(self) -> bool:
        return self.oldest() is None

    # -- writing -----------------------------------------------------------------------------
    def append(self, batch: list[Sample]) -> None:
        if not batch:
            return
        seg = self._current(len(batch) * _POINT.size)
        known = len(seg.table.keys)
        try:
            record = encode(batch, seg.table)
        except OverflowError:  # more PLC·metrics than a segment numbers: start another
            seg = self._current(self.segment_bytes + 1)
            known = 0
            record = encode(batch, seg.table)
        try:
            assert self._fd is not None
            if os.write(self._fd, record) != len(record):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:  # ENOSPC, EIO: the batch is lost, counted, and said
            self.dropped += len(batch)
            log.error(
                "spool write to %s failed (%s): %d samples dropped", seg.path, exc, len(batch)
            )
            # Nothing of the batch stays: not its keys, not a torn record the next start
            # would stop reading at.
            for key in seg.table.keys[known:]:
                del seg.table.ids[key]
            del seg.table.keys[known:]
            with contextlib.suppress(OSError):
                assert self._fd is not None
                os.ftruncate(self._fd, seg.size)
            self._close_fd()
            return
        seg.size += len(record)
        seg.ends.append(seg.size)
        seg.firsts.append(batch[0][0])
        seg.counts.append(len(batch))
        seg.pending += len(batch)
        seg.samples += len(batch)
        seg.first_time = seg.first_time or batch[0][0]
        self.spooled += len(batch)
        self._dirty = True
        self._enforce_bound()
        self.sync_if_due()

    def sync_if_due(self, *, force: bool = False) -> None:
        if self._fd is None or not self._dirty:
            return
        now = time.monotonic()
        if force or now - self._last_sync >= self.fsync_interval_s:
            os.fsync(self._fd)
            self._dirty = False
            self._last_sync = now

    def _current(self, need: int) -> _Segment:
        seg = self._segments[-1] if self._segments else None
        if seg is None or (seg.size + need > self.segment_bytes and seg.size > 0):
            self._close_fd()
            seq = seg.seq + 1 if seg else 1
            seg = _Segment(seq, self.directory / f"{seq:012d}.seg")
            self._segments.append(seg)
        if self._fd is None:
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the new file's name survives a power cut too
            finally:
                os.close(dir_fd)
        return seg

    def _close_fd(self) -> None:
        if self._fd is not None:
            if self._dirty:
                os.fsync(self._fd)
                self._dirty = False
            os.close(self._fd)
            self._fd = None

    def _enforce_bound(self) -> None:
        while self.bytes > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments.pop(0)
            self._done.pop(oldest.seq, None)
            lost = oldest.pending
            self.dropped += lost
            oldest.path.unlink(missing_ok=True)
            log.error(
                "spool full (%d bytes > %d): dropped its oldest segment, %d samples from %s on",
                self.bytes + oldest.size,
                self.max_bytes,
                lost,
                oldest.first_time,
            )

    # -- reading back ------------------------------------------------------------------------
    def set_progress(self, done: dict[int, int]) -> None:
        """What PostgreSQL already holds (ingest_spool_progress), read before a backfill."""
        self._done = dict(done)
        for seg in self._segments:
            seg.advance(self._done.get(seg.seq, 0))

    def next_records(self, max_samples: int) -> Iterator[Record]:
        """The oldest records not yet in PostgreSQL, up to about `max_samples` samples."""
        self.sync_if_due(force=True)  # a reader sees only what is on disk
        taken = 0
        for seg in list(self._segments):
            done = self._done.get(seg.seq, 0)
            if done >= seg.size:
                continue
            with seg.path.open("rb") as f:
                f.seek(done)
                data = f.read(seg.size - done)
            start = done
            for end, samples in _scan(data, seg.table):
                yield Record(seg.seq, start, done + end, samples)
                start = done + end
                taken += len(samples)
                if taken >= max_samples:
                    return
            return  # one segment at a time: time order

    def mark_done(self, record: Record) -> None:
        """The record is in PostgreSQL; a segment wholly there and no longer written goes."""
        self._done[record.segment] = max(self._done.get(record.segment, 0), record.end)
        for seg in list(self._segments):
            if seg.seq == record.segment:
                seg.advance(self._done[seg.seq])
            if self._done.get(seg.seq, 0) >= seg.size and seg is not self._segments[-1]:
                self._segments.remove(seg)
                self._done.pop(seg.seq, None)
                seg.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._close_fd()
        if self._lock >= 0:
            os.close(self._lock)  # releases the flock
            self._lock = -1


def _scan(data: bytes, table: KeyTable) -> Iterator[tuple[int, list[Sample]]]:
    """(end offset, samples) of each whole, intact record from the start of `data`; K records
    extend `table` and belong to the P record after them (a torn P drops its K too)."""
    at = 0
    pending: list[tuple[str, str]] = []
    while at + _HEADER.size <= len(data):
        magic, length, crc = _HEADER.unpack_from(data, at)
        start, end = at + _HEADER.size, at + _HEADER.size + length
        if magic != _MAGIC or end > len(data) or length < 1 + _COUNT.size:
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return
        if payload[:1] == b"K":
            pending += [k for k in _decode_keys(payload) if k not in table.ids]
        else:
            if pending:
                table.declare(pending)
                pending = []
            yield end, _decode_points(payload, table.keys)
        at = end
