"""The multi-site rig (dev/netns.py) on real namespaces, veths, processes and sockets: a site's
loopback is its own, sites reach the session's real PostgreSQL and Temporal only through the
centre, a cut link behaves like a pulled cable, a simulated plant runs inside a site, and
nothing of a rig outlives it (nor the leftovers of a run that was killed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

import pytest
import yaml

from dev.netns import CENTRAL, NETNS_DIR, TestNetwork
from factorylm.drivers import driver_for
from factorylm.plant import load_plant
from factorylm.settings import Settings
from helpers import TANK_METRICS, free_port, until

# Connects to each HOST:PORT argument and prints one JSON line per target: what came back,
# or the error's class and errno (a refusal, an unreachable network and a stall differ).
PROBE = """
import json, socket, sys
timeout = float(sys.argv[1])
for target in sys.argv[2:]:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            result = "reply:" + conn.recv(64).decode().strip()
    except OSError as exc:
        result = f"error:{type(exc).__name__}:{exc.errno}"
    print(json.dumps({"target": target, "result": result}), flush=True)
"""

# A TCP server on the host's loopback that greets each connection with its site's name.
GREETER = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(sys.argv[2].encode() + b"\\n")
    conn.close()
"""

# One TCP connection for the process's whole life: a numbered line out, its echo back, again.
PINGER = """
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
conn.settimeout(None)
print("connected", conn.getsockname()[1], flush=True)
replies = conn.makefile("rb")
n = 0
while True:
    conn.sendall(b"%d\\n" % n)
    line = replies.readline()
    if not line:
        print("closed", flush=True)
        break
    print("echo", line.strip().decode(), flush=True)
    n += 1
    time.sleep(0.02)  # pacing, ~40 round trips a second
"""


async def probe(net: TestNetwork, host: str, *targets: str, timeout_s: float = 2.0) -> list[str]:
    done = await net.exec_in(host, [sys.executable, "-c", PROBE, str(timeout_s), *targets])
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["result"] for line in done.stdout.splitlines()]


def rig_namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.startswith(prefix)]


async def ip(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec("ip", *args, stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"ip {' '.join(args)} failed"
    return out.decode()


def is_dir(path: str) -> bool:
    return Path(path).is_dir()


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_server_on_a_sites_loopback_is_reachable_from_that_site_only() -> None:
    port = free_port()  # free in the root namespace too, so a refusal there is no accident
    async with TestNetwork(["a", "b"]) as net:
        greeter = net.run_in("a", [sys.executable, "-c", GREETER, str(port), "site-a"])
        await greeter.wait_for_output("listening")
        site_a = net.ip_of("a")

        assert await probe(net, "a", f"127.0.0.1:{port}") == ["reply:site-a"]
        # Site b: its own loopback has no such server, and it has no route to site a at all.
        assert await probe(net, "b", f"127.0.0.1:{port}", f"{site_a}:{port}") == [
            "error:ConnectionRefusedError:111",
            "error:OSError:101",  # ENETUNREACH
        ]
        # The centre reaches site a's address, but the server listens on a's loopback only.
        assert await probe(net, CENTRAL, f"127.0.0.1:{port}", f"{site_a}:{port}") == [
            "error:ConnectionRefusedError:111",
            "error:ConnectionRefusedError:111",
        ]
        assert await probe_root(f"127.0.0.1:{port}") == ["error:ConnectionRefusedError:111"]


async def probe_root(*targets: str) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBE, "2", *targets, stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return [json.loads(line)["result"] for line in out.decode().splitlines()]


SITE_CLIENT = """
import asyncio, json, os, socket
import asyncpg
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from factorylm.settings import load_settings

async def main() -> None:
    s = load_settings()
    conn = await asyncpg.connect(s.pg_dsn, timeout=10)
    database = await conn.fetchval("SELECT current_database()")
    await conn.close()
    client = await Client.connect(s.temporal_address, namespace=s.temporal_namespace)
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=s.temporal_namespace)
    )
    try:
        socket.create_connection(("127.0.0.1", s.pg_port), timeout=2).close()
        direct = "connected"
    except OSError as exc:
        direct = type(exc).__name__
    print(json.dumps({"database": database, "namespace": described.namespace_info.name,
                      "pg_host": s.pg_host, "direct": direct}), flush=True)

asyncio.run(main())
# Once the answer is out, no interpreter finalization: with temporalio's core threads still up
# it can abort a short script (PyGILState_Release, exit -6) after all went well.
os._exit(0)
"""


async def test_a_site_reaches_the_real_postgres_and_temporal_through_the_centre_only(
    settings: Settings,
) -> None:
    async with TestNetwork(["a"]) as net:
        env = net.site_env(settings)
        done = await net.exec_in("a", [sys.executable, "-c", SITE_CLIENT], env)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout.splitlines()[-1])
        assert seen == {
            "database": settings.pg_database,  # the session's own test database
            "namespace": settings.temporal_namespace,
            "pg_host": net.centre_ip,
            # The root namespace's PostgreSQL is not on the site's loopback: only the centre's
            # forwarder leads there.
            "direct": "ConnectionRefusedError",
        }
        pg = net.forwarder(settings.pg_port).stats
        temporal = net.forwarder(int(settings.temporal_address.rpartition(":")[2])).stats
        for stats in (pg, temporal):
            assert stats.by_peer == {net.ip_of("a"): stats.connections}
            assert stats.connections >= 1 and stats.failed == 0
            assert stats.bytes_up > 0 and stats.bytes_down > 0


def echoes(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("echo "))


async def test_a_cut_link_stalls_that_site_like_a_pulled_cable_and_leaves_the_other_working() -> (
    None
):
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with TestNetwork(["a", "b"]) as net:
            fwd = net.forward(port)
            a = net.run_in("a", [sys.executable, "-c", PINGER, net.centre_ip, str(port)])
            b = net.run_in("b", [sys.executable, "-c", PINGER, net.centre_ip, str(port)])
            await until(
                "both sites' echoes", lambda: min(echoes(a.output()), echoes(b.output())) >= 3
            )

            net.cut("a")
            a_at_cut, b_at_cut = echoes(a.output()), echoes(b.output())
            # A new connection from a during the cut: silence until its own timeout, neither
            # a refusal nor "no route to host".
            assert await probe(net, "a", f"{net.centre_ip}:{port}", timeout_s=1.5) == [
                "error:TimeoutError:None"
            ]
            await until("b's echoes during a's cut", lambda: echoes(b.output()) >= b_at_cut + 20)
            assert echoes(a.output()) <= a_at_cut + 1  # at most the round trip in flight

            net.restore("a")
            await until("a's echoes after the restore", lambda: echoes(a.output()) >= a_at_cut + 5)
            # The same TCP connection carried on: a connected once, never saw it close, and the
            # forwarder accepted exactly one connection from a (the probe never got through).
            assert a.output().count("connected") == 1 and "closed" not in a.output()
            assert fwd.stats.by_peer == {net.ip_of("a"): 1, net.ip_of("b"): 1}
    finally:
        server.close()


def tank_plant(path: Path, plc_id: str, port: int, *, level_mean: float = 50.0) -> Path:
    metrics = [dict(m) for m in TANK_METRICS]
    metrics[0] = {**metrics[0], "baseline": {"mean": level_mean, "std": 1.0}}
    raw = {
        "plcs": [
            {
                "id": plc_id,
                "vendor": "generic_modbus",
                "protocol": "modbus_tcp",
                "port": port,
                "poll_interval_ms": 50,
                "metrics": metrics,
            }
        ]
    }
    path.write_text(yaml.safe_dump(raw))
    return path


# Reads the plant file's only PLC five times with the product's own driver.
READ_PLC = """
import asyncio, json, sys
from pathlib import Path
from factorylm.drivers import driver_for
from factorylm.plant import load_plant

async def main() -> None:
    plc = load_plant(Path(sys.argv[1])).plcs[0]
    driver = driver_for(plc, timeout_s=1.0)
    try:
        await driver.connect()
        reads = [await driver.read_points(list(plc.metrics)) for _ in range(5)]
        print(json.dumps({"level": sum(r["level"] for r in reads) / len(reads)}))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__}))
    finally:
        await driver.close()

asyncio.run(main())
"""


async def test_a_simulated_plant_runs_inside_a_site_and_only_that_site_reads_it(
    tmp_path: Path,
) -> None:
    # The same PLC port as the demo's conveyor: inside a site it is free whatever the root
    # namespace runs, which is what lets every site use the plant file's own ports.
    plant = tank_plant(tmp_path / "plant.yaml", "tank-a", 15020)
    async with TestNetwork(["a", "b"]) as net:
        await net.simulate("a", plant)
        read = [sys.executable, "-c", READ_PLC, str(plant)]

        before = json.loads((await net.exec_in("a", read)).stdout)
        assert abs(before["level"] - 50.0) < 2.0  # the plant file's baseline: mean 50, std 1
        assert json.loads((await net.exec_in("b", read)).stdout) == {"error": "PlcError"}

        faults = await net.inject("a", plc="tank-a", metric="level", kind="step", size="6sigma")
        assert faults == {"tank-a": {"level": "step +6σ"}}
        after = json.loads((await net.exec_in("a", read)).stdout)
        assert after["level"] > 54.0  # +6σ of std 1 over 50, noise σ 0.6

        # The test's own window onto the site's loopback: the product's driver, from here.
        window = net.expose("a", 15020)
        plc = load_plant(plant).plcs[0]
        driver = driver_for(plc.model_copy(update={"port": window.listen[1]}), timeout_s=1.0)
        try:
            await driver.connect()
            assert (await driver.read_points(list(plc.metrics)))["level"] > 54.0
        finally:
            await driver.close()
        assert window.stats.connections == 1 and window.stats.bytes_down > 0


async def test_two_sites_serve_their_own_plants_on_the_same_port(tmp_path: Path) -> None:
    plants = {
        site: tank_plant(tmp_path / f"{site}.yaml", f"tank-{site}", 15020, level_mean=mean)
        for site, mean in (("a", 50.0), ("b", 80.0))
    }
    async with TestNetwork(["a", "b"]) as net:
        await asyncio.gather(*(net.simulate(site, plant) for site, plant in plants.items()))
        for site, mean in (("a", 50.0), ("b", 80.0)):
            done = await net.exec_in(site, [sys.executable, "-c", READ_PLC, str(plants[site])])
            assert abs(json.loads(done.stdout)["level"] - mean) < 2.0, (site, done.stdout)


# Starts a child that leaves the process group (a daemon would): only the rig's sweep of its
# namespaces can find it.
ESCAPER = """
import subprocess, sys
child = subprocess.Popen(["sleep", "600"], start_new_session=True)
print("escaped", child.pid, flush=True)
subprocess.run(["sleep", "600"])
"""


@pytest.mark.parametrize("failing", [False, True], ids=["clean-exit", "test-raised"])
async def test_nothing_of_a_rig_remains_after_it_exits(failing: bool, tmp_path: Path) -> None:
    pids: list[int] = []
    rig: TestNetwork | None = None
    with pytest.raises(RuntimeError, match="the test failed") if failing else nullcontext():
        # A failed rig keeps its process logs: here in tmp_path, not the system's /tmp.
        async with TestNetwork(["a", "b"], log_dir=tmp_path / "logs" if failing else None) as net:
            rig = net
            net.forward(free_port())
            escaper = net.run_in("a", [sys.executable, "-c", ESCAPER])
            await escaper.wait_for_output("escaped")
            pids = [escaper.pid, int(escaper.output().split()[1])]
            net.run_in("b", ["sleep", "600"])
            pids.append(net.run_in(CENTRAL, ["sleep", "600"]).pid)
            assert len(rig_namespaces(net.prefix)) == 3 and all(map(pid_alive, pids))
            if failing:
                raise RuntimeError("the test failed")
    assert rig is not None
    assert rig_namespaces(rig.prefix) == []
    assert [p for p in pids if pid_alive(p)] == []
    assert f"f{rig.token}" not in await ip("-o", "link")
    assert [t.name for t in threading.enumerate() if t.name.startswith("netns-")] == []
    assert not rig.marker.exists()
    assert rig.leftovers() == []
    assert rig.log_dir.exists() == failing  # its own temporary directory went with it


KILLED_RUN = """
import sys, time
from dev.netns import TestNetwork
net = TestNetwork(["a"]).start()
inside = net.run_in("a", ["sleep", "600"])
print(net.prefix, inside.pid, net.log_dir, flush=True)
time.sleep(600)
"""


async def test_a_killed_runs_leftovers_are_removed_by_the_next_rig_and_lookalikes_kept() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_RUN, stdout=subprocess.PIPE, start_new_session=True
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no cleanup runs: what a killed test run leaves
        await child.wait()
    prefix, inside, logs = line.decode().split()
    inside_pid = int(inside)
    assert sorted(rig_namespaces(prefix)) == [f"{prefix}-a", f"{prefix}-central"]
    assert pid_alive(inside_pid) and is_dir(logs)
    # Named like a rig of the same dead PID, but no marker proves it is one: left alone.
    lookalike = f"flm-{child.pid}-ffff-lookalike"
    await ip("netns", "add", lookalike)
    try:
        async with TestNetwork(["x"]):
            assert rig_namespaces(prefix) == []
            await until(
                "the killed run's process gone", lambda: not pid_alive(inside_pid), timeout_s=5
            )
            assert (NETNS_DIR / lookalike).exists()
            assert not is_dir(logs)  # the temporary log directory that run made
    finally:
        await ip("netns", "delete", lookalike)


BUILD_A_RIG = """
from dev.netns import TestNetwork
with TestNetwork(["a"]):
    pass
"""


async def test_without_root_or_ip_the_rig_fails_saying_what_is_missing() -> None:
    async def attempt(*prefix: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-c", BUILD_A_RIG, stderr=subprocess.PIPE, env=env
        )
        _, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, err.decode().strip().splitlines()[-1]

    as_nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    assert await attempt(*as_nobody) == (
        1,
        "dev.netns.RigUnavailableError: the network-namespace test rig (dev/netns.py) needs "
        "root (running as uid 65534; `ip netns add` needs root)",
    )
    assert await attempt(env={**os.environ, "PATH": "/nonexistent"}) == (
        1,
        "dev.netns.RigUnavailableError: the network-namespace test rig (dev/netns.py) needs "
        "iproute2's `ip` (apt-get install iproute2; scripts/setup.sh does)",
    )
