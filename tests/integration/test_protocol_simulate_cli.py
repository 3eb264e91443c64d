"""`factorylm simulate` as an operator runs it: every peer of the plant file up, faults
injected and cleared at run time through `simulate inject|clear` over the control channel."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from factorylm.drivers import PlcError, driver_for
from factorylm.settings import PROJECT_ROOT
from helpers import free_port, plant_with_free_ports, until


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_simulate_serves_the_plant_and_takes_faults_at_run_time(tmp_path: Path) -> None:
    plant, path = plant_with_free_ports(tmp_path)
    control = str(free_port())
    env = {**os.environ, "FACTORYLM_PLANT_FILE": str(path)}
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "simulate",
        "--control-port",
        control,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert sim.stdout is not None
    press = plant.plc("press-1")
    assert press is not None
    driver = driver_for(press)
    try:
        lines: list[str] = []
        while not lines or "fault control on" not in lines[-1]:
            line = await asyncio.wait_for(sim.stdout.readline(), 30)
            assert line, f"simulate exited: {lines}"
            lines.append(line.decode())
        assert sum("simulating" in line for line in lines) == len(plant.plcs)

        code, out, err = await _cli(
            "simulate", "inject", "--plc", "press-1", "--metric", "vibration",
            "--kind", "step", "--size", "4sigma", "--control-port", control, env=env,
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["press-1"] == {"vibration": "step +4σ"}
        vib = press.metric("vibration")
        assert vib is not None and vib.baseline is not None
        limit = vib.baseline.mean + 2.5 * vib.baseline.std

        async def stepped() -> bool:
            return (await driver.read_points([vib]))["vibration"] > limit

        # Ticks every 50 ms: a few reads see the stepped value.
        await until(f"press-1 vibration above {limit:.2f} over S7", stepped, timeout_s=10)

        code, _, err = await _cli(
            "simulate", "inject", "--plc", "nope", "--kind", "offline",
            "--control-port", control, env=env,
        )  # fmt: skip
        assert code == 1 and "no simulated PLC 'nope'" in err

        code, _, err = await _cli(
            "simulate", "inject", "--plc", "press-1", "--kind", "offline",
            "--control-port", control, env=env,
        )  # fmt: skip
        assert code == 0, err
        await driver.close()
        try:
            await driver.read_points([vib])
            raise AssertionError("press-1 still answers while offline")
        except PlcError:
            pass
        code, out, err = await _cli(
            "simulate", "clear", "--plc", "press-1", "--control-port", control, env=env
        )
        assert code == 0, err and json.loads(out)["press-1"] == {}
        await driver.close()
        assert "vibration" in await driver.read_points([vib])
    finally:
        await driver.close()
        sim.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(sim.wait(), 30)
    assert code == 0
    pump_tty = str(plant.plc("pump-1").serial_port)  # type: ignore[union-attr]
    assert not await asyncio.to_thread(os.path.lexists, pump_tty)


async def test_inject_without_a_simulator_says_how_to_start_one() -> None:
    code, _, err = await _cli(
        "simulate", "faults", "--control-port", str(free_port()), env=dict(os.environ)
    )
    assert code == 1 and "factorylm simulate" in err
