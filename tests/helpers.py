"""Test helpers shared by the test modules (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from dev.fakes.server import free_port
from factorylm.db.pool import prepare_database
from factorylm.models.drift import DriftAlert
from factorylm.plant import Plant
from factorylm.settings import PROJECT_ROOT, Settings
from factorylm.waiting import wait_for

__all__ = ["free_port", "until"]  # free_port: re-exported for the test modules


async def until(what: str, check: Callable[[], Any], *, timeout_s: float = 30.0) -> Any:
    """The truthy value of `check` (sync or async) once it has one; a test failure naming
    `what` if it never does. Polls every 20 ms: tests wait on conditions, never on time."""
    try:
        return await wait_for(what, check, timeout_s=timeout_s, interval_s=0.02)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def plant_with_free_ports(tmp_path: Path) -> tuple[Plant, Path]:
    """The shipped demo plant, with each simulated PLC moved to a free port (and each serial
    device into tmp_path), so test runs side by side never share a peer."""
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "plant.yaml").read_text())
    moved: dict[int, int] = {}  # PLCs that share a port (an MQTT broker) share the new one
    for plc in raw["plcs"]:
        old = plc.get("port")
        plc["port"] = moved.setdefault(old, free_port()) if old else free_port()
        if plc.get("serial_port"):
            plc["serial_port"] = str(tmp_path / "tty" / plc["id"])
    if raw.get("publish"):
        raw["publish"]["port"] = moved.setdefault(raw["publish"]["port"], free_port())
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Plant.model_validate(raw), path


# A tank's three f32 registers with their starting baselines (ingest and outbox tests).
TANK_METRICS: list[dict[str, Any]] = [
    {"name": "level", "register": 0, "type": "f32", "baseline": {"mean": 50.0, "std": 1.0}},
    {"name": "pressure", "register": 2, "type": "f32", "baseline": {"mean": 3.0, "std": 0.1}},
    {"name": "temp", "register": 4, "type": "f32", "baseline": {"mean": 20.0, "std": 0.5}},
]


def modbus_plant(plc_ids: list[str], metrics: list[dict[str, Any]]) -> Plant:
    """Simulated Modbus TCP PLCs polled every 50 ms, each on a free port, each serving the same
    `metrics` (plant-file entries: name, register, type, baseline, detectors)."""
    return Plant.model_validate(
        {
            "plcs": [
                {
                    "id": plc_id,
                    "vendor": "generic_modbus",
                    "protocol": "modbus_tcp",
                    "port": free_port(),
                    "poll_interval_ms": 50,
                    "metrics": metrics,
                }
                for plc_id in plc_ids
            ]
        }
    )


def make_alert(
    sigma: float,
    metric: str = "vibration",
    plc: str = "conveyor-1",
    *,
    std: float = 1.0,
    site: str = "",
) -> DriftAlert:
    """A drift alert as the detector would raise it, `sigma` away from a baseline at 0 (with
    no site: as recorded before sites; the planner then takes its PLC's)."""
    now = datetime.now(UTC)
    return DriftAlert(
        plc_id=plc,
        site=site,
        vendor="generic_modbus",
        metric=metric,
        sigma=sigma,
        window_mean=sigma * std,
        window_count=20,
        window_seconds=5,
        baseline_mean=0.0,
        baseline_std=std,
        sample_time=now,
        detected_at=now,
    )


class SwitchableProxy:
    """A TCP proxy to PostgreSQL that can be cut and restored: a database outage on demand."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.up = True
        self._conns: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._conns += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.up = False
        for conn in self._conns:
            conn.close()
        self._conns.clear()

    async def close(self) -> None:
        self.cut()
        if self._server:
            self._server.close()


@asynccontextmanager
async def own_database(settings: Settings, suffix: str) -> AsyncIterator[Settings]:
    """A migrated database of the test's own, dropped after: for what is database-wide (the
    rollups' watermark, the raw drop)."""
    own = settings.model_copy(update={"pg_database": f"{settings.pg_database}_{suffix}"})
    await prepare_database(own)
    try:
        yield own
    finally:
        conn = await asyncpg.connect(settings.dsn_for("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{own.pg_database}" WITH (FORCE)')
        finally:
            await conn.close()


async def refused_as(conn: asyncpg.Connection, role: str, sql: str) -> None:
    """`sql` run as `role` is refused for want of a privilege. In a transaction of its own, so
    the role ends with it."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)
