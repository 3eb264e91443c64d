"""The `factorylm` command as a user runs it, against the running parts."""

from __future__ import annotations

import os
import subprocess
import sys

from factorylm.settings import Settings


def run_cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "FACTORYLM_TEMPORAL_ADDRESS": settings.temporal_address,
        "FACTORYLM_TEMPORAL_UI_PORT": str(settings.temporal_ui_port),
        "FACTORYLM_PG_PORT": str(settings.pg_port),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def test_doctor_reports_every_part_ok(settings: Settings) -> None:
    result = run_cli(settings, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for part in (
        "postgres",
        "timescaledb",
        "vector",
        "temporal-cli",
        "temporal ",
        "temporal-ui",
        "embedding-model",
        "sandbox",
    ):
        assert any(line.startswith("ok") and part in line for line in result.stdout.splitlines()), (
            part
        )
    assert "timescaledb 2." in result.stdout and "vector 0." in result.stdout
    # The demo plant is one site, its edge queue named after it.
    (site,) = [x for x in result.stdout.splitlines() if x.startswith("ok      site ")]
    assert site.startswith("ok      site demo-plant  6 PLC(s), ")
    assert f"; {settings.plc_task_queue}-demo-plant: " in site
    assert site.endswith(" edge worker(s) polling now")


def test_doctor_names_what_is_missing_and_the_fix(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        settings,
        "doctor",
        FACTORYLM_TEMPORAL_ADDRESS="127.0.0.1:1",
        FACTORYLM_EMBEDDING_MODEL_DIR=str(tmp_path),
    )
    assert result.returncode == 1
    assert "MISSING temporal " in result.stdout and "fix: factorylm temporal start" in result.stdout
    assert "MISSING embedding-model" in result.stdout
    assert "part(s) missing" in result.stdout


def test_bad_setting_is_named(settings: Settings) -> None:
    result = run_cli(settings, "doctor", FACTORYLM_API_PORT="eighty")
    assert result.returncode == 2
    assert "FACTORYLM_API_PORT" in result.stderr
