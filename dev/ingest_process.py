"""`factorylm ingest` as a process of its own, for the benchmarks and tests that stop, kill or
restart it: the settings it needs to reach the same database and Temporal as the caller."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import BinaryIO

from factorylm.settings import PROJECT_ROOT, Settings


def ingest_env(
    settings: Settings,
    plant_file: Path,
    *,
    pg_port: int | None = None,
    **overrides: str,
) -> dict[str, str]:
    """The caller's environment with the plant, the database (or a proxy's port in front of
    it), Temporal and any FACTORYLM_* overrides (`spool_dir="…"` → FACTORYLM_SPOOL_DIR)."""
    return {
        **os.environ,
        "FACTORYLM_PLANT_FILE": str(plant_file),
        "FACTORYLM_PG_DATABASE": settings.pg_database,
        "FACTORYLM_PG_PORT": str(pg_port or settings.pg_port),
        "FACTORYLM_TEMPORAL_ADDRESS": settings.temporal_address,
        "FACTORYLM_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        **{f"FACTORYLM_{name.upper()}": value for name, value in overrides.items()},
    }


def _log(path: Path | None) -> BinaryIO:
    return path.open("ab") if path else open(os.devnull, "wb")  # the caller closes it


async def start_ingest(
    env: dict[str, str], log_file: Path | None = None
) -> asyncio.subprocess.Process:
    """The process, its log appended to `log_file` (or dropped): a benchmark that finds it
    exited can say why."""
    with _log(log_file) as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "ingest",
            env=env,
            cwd=PROJECT_ROOT,
            stderr=log,
        )
