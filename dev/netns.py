"""Test hosts as Linux network namespaces: one namespace per site and one for the centre.

A site is a host of its own: its loopback is private (its simulated PLCs listen there, so only
processes of that site reach them) and its one link is a veth pair into the central namespace.
The central services of a test run (the shared PostgreSQL cluster, the session's Temporal dev
server) listen on the root namespace's loopback, which no namespace can reach; the rig listens
on the centre's address inside the central namespace and forwards each connection to
127.0.0.1 in the root namespace, from a thread of the calling process.

Needs root and iproute2's `ip`; without them it fails with a message saying so (never skips).
Every name carries the creating process's PID and a random token, and a marker file under
/run/factorylm-netns records the creator's PID and start time: a later run removes leftovers
only when that marker proves their creator is gone (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from factorylm.settings import PROJECT_ROOT, Settings
from factorylm.waiting import wait_for

log = logging.getLogger(__name__)

__all__ = [
    "CENTRAL",
    "ForwardStats",
    "Forwarder",
    "HostProcess",
    "RigUnavailableError",
    "Site",
    "TestNetwork",
    "in_netns",
    "remove_stale",
    "require_rig",
]

CENTRAL = "central"  # the host name of the central namespace (no site may take it)
NETNS_DIR = Path("/run/netns")  # where `ip netns add` mounts each namespace
MARKER_DIR = Path("/run/factorylm-netns")  # one marker per rig: who made which namespaces
# flm-<creator pid>-<token>-<host>: the PID and token make names unique across runs and let a
# later run find a killed run's leftovers.
_OURS = re.compile(r"^flm-(\d+)-([0-9a-f]{4})-")
_SITE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")  # as a plant file's site name
_CLONE_NEWNET = 0x40000000
MAX_SITES = 200  # site i gets 10.x.0.(10 + i)

T = TypeVar("T")


class RigUnavailableError(RuntimeError):
    """The machine cannot build the rig (not root, no `ip`, no namespaces)."""


def require_rig() -> None:
    """Fail loudly, with what is missing, when namespaces cannot be made here."""
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (running as uid {os.geteuid()}; `ip netns add` needs root)")
    if shutil.which("ip") is None:
        missing.append("iproute2's `ip` (apt-get install iproute2; scripts/setup.sh does)")
    if not Path("/proc/thread-self/ns/net").exists():
        missing.append("network namespaces (/proc/thread-self/ns/net is absent)")
    if not hasattr(_libc(), "setns"):
        missing.append("setns(2) in the C library")
    if missing:
        raise RigUnavailableError(
            "the network-namespace test rig (dev/netns.py) needs " + "; ".join(missing)
        )


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def in_netns(netns: str, make: Callable[[], T]) -> T:
    """`make()` run by a fresh thread switched into `netns` (Python 3.11 has no os.setns, so
    through the C library). A socket stays in the namespace it was made in, so this is how a
    listening socket in the central namespace is made; the thread switches back and ends, so
    no thread of the caller is ever left in another namespace."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException as exc:
            error.append(exc)
            return
        try:
            target = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                result.append(make())
            finally:
                _setns(own)
        except BaseException as exc:
            error.append(exc)
        finally:
            os.close(own)

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if it is gone: a PID
    with the recorded start time is the same process, not a reused number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses, so count from ")".
    return int(stat.rpartition(")")[2].split()[19])


def _netns_pids(netns: str) -> list[int]:
    out = _ip("netns", "pids", netns, check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def _kill_all(pids: Sequence[int], *, timeout_s: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)  # a SIGKILLed process is gone within milliseconds; a hard bound


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie holds no namespace or port)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _kill_netns_pids(netns: str) -> None:
    _kill_all(_netns_pids(netns))


def _remove_netns(netns: str) -> None:
    _kill_all(_netns_pids(netns))
    try:
        _ip("netns", "delete", netns)
    except RuntimeError:
        # Gone is what counts: another run's sweep may have deleted it a moment before.
        if (NETNS_DIR / netns).exists():
            raise


def remove_stale() -> list[str]:
    """Removes the namespaces of rigs whose creating process is gone (a killed test run),
    with any process still inside them; returns their names. Only namespaces listed in a
    marker whose PID and start time no longer match a live process are touched, so a run
    beside this one, or a namespace that merely looks like ours, is left alone."""
    removed: list[str] = []
    if not MARKER_DIR.is_dir():
        return removed
    for marker in sorted(MARKER_DIR.glob("flm-*.json")):
        try:
            record = json.loads(marker.read_text())
            pid, started = int(record["pid"]), int(record["start_time"])
            names = [str(name) for name in record["namespaces"]]
            logs = record.get("own_log_dir")
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("netns rig: unreadable marker %s left alone", marker)
            continue
        if _start_time(pid) == started:
            continue  # its creator is alive: a rig in use
        for name in names:
            if _OURS.match(name) and name.startswith(marker.stem + "-"):
                if (NETNS_DIR / name).exists():
                    _remove_netns(name)
                    removed.append(name)
        if isinstance(logs, str) and Path(logs).name.startswith(marker.stem + "-"):
            shutil.rmtree(logs, ignore_errors=True)  # a directory the dead rig made itself
        marker.unlink(missing_ok=True)
    if removed:
        log.warning("netns rig: removed leftovers of a killed run: %s", ", ".join(removed))
    return removed


@dataclass(frozen=True)
class Site:
    """A site host: its namespace, its address on the link to the centre, the link's ends."""

    name: str
    index: int
    netns: str
    ip: str
    central_iface: str  # the veth end in the central namespace (`cut` brings it down)
    site_iface: str  # the veth end inside the site


@dataclass
class ForwardStats:
    """What one forwarder carried: connections accepted (in total, open now, per client
    address, i.e. per site) and bytes each way."""

    connections: int = 0
    active: int = 0
    failed: int = 0  # accepted, but the service in the root namespace refused
    bytes_up: int = 0  # client (site) → service
    bytes_down: int = 0  # service → client
    by_peer: dict[str, int] = field(default_factory=dict)


class Forwarder:
    """Connections to `listen` carried to `target`: centre_ip:port in the central namespace to
    the root namespace's loopback (`TestNetwork.forward`), or the other way, the root's
    loopback to a port on a site's loopback (`TestNetwork.expose`, with `target_netns`)."""

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        *,
        target_netns: str | None = None,
    ) -> None:
        self.listen = listen
        self.target = target
        self.target_netns = target_netns
        self.stats = ForwardStats()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = str(writer.get_extra_info("peername")[0])
        stats = self.stats
        stats.connections += 1
        stats.by_peer[peer] = stats.by_peer.get(peer, 0) + 1
        stats.active += 1
        self._writers.add(writer)
        try:
            try:
                up_reader, up_writer = await self._connect()
            except OSError:
                stats.failed += 1
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_writer, up=True),
                    self._pipe(up_reader, writer, up=False),
                )
            except asyncio.CancelledError:
                # The rig closing: asyncio's stream callback would log a cancelled handler
                # as an error ("Exception in callback"); the connection just ends.
                return
            finally:
                up_writer.close()
                self._writers.discard(up_writer)
        finally:
            writer.close()
            self._writers.discard(writer)
            stats.active -= 1
            self._tasks.discard(task)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.target_netns is None:
            return await asyncio.open_connection(*self.target)
        netns, target = self.target_netns, self.target

        def connect() -> socket.socket:
            sock = socket.create_connection(target, timeout=5)
            sock.setblocking(False)
            return sock

        # Made by a thread inside the target namespace, then used from this loop as any other.
        sock = await asyncio.get_running_loop().run_in_executor(None, in_netns, netns, connect)
        return await asyncio.open_connection(sock=sock)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, up: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()  # a half-close is passed on, as a direct connection would
        except (ConnectionError, OSError):
            dst.transport.abort()  # one side failed: so does the other, at once

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _ForwarderThread:
    """The forwarders' own event loop on a thread of its own: forwarding goes on while the
    caller's loop is busy or blocked, and sync callers (`with TestNetwork(...)`) work too."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="netns-forwarders", daemon=True
        )
        self._thread.start()

    def run(self, coro: Any, timeout_s: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop_forwarder(self, fwd: Forwarder) -> None:
        self.run(fwd.stop())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class HostProcess:
    """A process started inside a namespace by `TestNetwork.run_in`, in a process group of its
    own, its stdout and stderr in `log_path`."""

    def __init__(self, host: str, argv: list[str], popen: subprocess.Popen[bytes], log: Path):
        self.host = host
        self.argv = argv
        self.popen = popen
        self.log_path = log
        self._terminated = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_output(self, text: str, *, timeout_s: float = 60.0) -> None:
        """Until `text` is in the process's output; an error with the output's end if the
        process exits first or the time runs out."""

        def seen() -> bool:
            if text in self.output():
                return True
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[0]} in {self.host} exited ({self.popen.returncode}) before "
                    f"printing {text!r}; its output ends: {self.output()[-2000:]}"
                )
            return False

        try:
            await wait_for(
                f"{text!r} from {self.argv[0]} in {self.host}",
                seen,
                interval_s=0.02,
                timeout_s=timeout_s,
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its output ends: {self.output()[-2000:]}") from None

    def terminate(self) -> None:
        """SIGTERM to the whole group, once (a second one may cut a graceful stop short)."""
        if not self._terminated and self.popen.poll() is None:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM to the whole group, SIGKILL after `timeout_s`; then SIGKILL to whatever of
        the group outlived its leader. Returns the exit code."""
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.returncode

    async def astop(self, timeout_s: float = 10.0) -> int | None:
        """`stop` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.stop, timeout_s)


class TestNetwork:
    """The rig: `with TestNetwork(["a", "b"]) as net:` or `async with`. Builds a central
    namespace and one namespace per site, each site linked to the centre by its own veth pair
    (sites cannot reach each other: the centre does not route between them), and removes all
    of it, with every process started in it, on exit."""

    __test__ = False  # a class named Test*: not a test class for pytest

    def __init__(
        self,
        sites: Sequence[str],
        *,
        forward_ports: Sequence[int] = (),
        log_dir: Path | None = None,
    ) -> None:
        if not sites:
            raise ValueError("a TestNetwork needs at least one site")
        if len(sites) > MAX_SITES or len(set(sites)) != len(sites):
            raise ValueError(f"sites must be distinct and at most {MAX_SITES}: {list(sites)}")
        for name in sites:
            if not _SITE.match(name) or name == CENTRAL:
                raise ValueError(
                    f"site name {name!r}: lowercase letters, digits and '-', at most 31, "
                    f"not {CENTRAL!r}"
                )
        self.token = secrets.token_hex(2)
        self.prefix = f"flm-{os.getpid()}-{self.token}"
        # Addresses exist only inside the rig's namespaces, so runs side by side may even pick
        # the same ones; 10.200-250.x is just a range no real network here is likely to use.
        octet = 200 + secrets.randbelow(51)
        self.centre_ip = f"10.{octet}.0.1"
        self.central_netns = f"{self.prefix}-{CENTRAL}"
        self.sites: dict[str, Site] = {
            name: Site(
                name=name,
                index=i,
                netns=f"{self.prefix}-{name}",
                ip=f"10.{octet}.0.{10 + i}",
                # ≤ 15 characters (IFNAMSIZ); made inside the namespaces, never in the root one.
                central_iface=f"f{self.token}c{i}",
                site_iface=f"f{self.token}s{i}",
            )
            for i, name in enumerate(sites)
        }
        self._initial_forwards = list(forward_ports)
        self._log_dir = log_dir
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or Path("/nonexistent")
        self.marker = MARKER_DIR / f"{self.prefix}.json"
        self._forwarders: dict[int, Forwarder] = {}
        self._exposed: dict[tuple[str, int], Forwarder] = {}
        self._thread: _ForwarderThread | None = None
        self._processes: list[HostProcess] = []
        self._cut: set[str] = set()
        self._inodes: dict[str, int] = {}
        self._started = False
        self._closed = False

    # -- building and removing -----------------------------------------------------------

    def start(self) -> TestNetwork:
        if self._started:
            raise RuntimeError(f"netns rig {self.prefix} was already started (one use each)")
        require_rig()
        remove_stale()
        self.log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        try:
            # The marker first: a run killed at any later point leaves provably-ours leftovers.
            MARKER_DIR.mkdir(mode=0o755, exist_ok=True)
            start_time = _start_time(os.getpid())
            record = {
                "pid": os.getpid(),
                "start_time": start_time,
                "namespaces": [self.central_netns, *(s.netns for s in self.sites.values())],
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "own_log_dir": str(self.log_dir) if self._own_log_dir else None,
            }
            self.marker.write_text(json.dumps(record) + "\n")
            self._add_netns(self.central_netns)
            for site in self.sites.values():
                self._add_netns(site.netns)
                self._link(site)
            for port in self._initial_forwards:
                self.forward(port)
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def _add_netns(self, netns: str) -> None:
        _ip("netns", "add", netns)
        self._inodes[netns] = os.stat(NETNS_DIR / netns).st_ino
        _ip("link", "set", "lo", "up", netns=netns)

        def no_ipv6_on_new_links() -> None:
            # The veths then carry only the IPv4 the rig assigns (no IPv6 link-local chatter);
            # lo keeps ::1 for programs that bind "localhost".
            Path("/proc/sys/net/ipv6/conf/default/disable_ipv6").write_text("1")

        if Path("/proc/sys/net/ipv6").exists():
            in_netns(netns, no_ipv6_on_new_links)

    def _link(self, site: Site) -> None:
        c, s = self.central_netns, site.netns
        # Both ends are created directly in their namespaces: the names never exist in the
        # root namespace, so they cannot clash with its interfaces or another run's.
        _ip(
            "link",
            "add",
            site.central_iface,
            "netns",
            c,
            "type",
            "veth",
            "peer",
            "name",
            site.site_iface,
            "netns",
            s,
        )
        # A point-to-point /32 on each end: the centre holds one address on every link, each
        # site only a route to the centre (none to another site).
        _ip(
            "addr",
            "add",
            f"{self.centre_ip}/32",
            "peer",
            f"{site.ip}/32",
            "dev",
            site.central_iface,
            netns=c,
        )
        _ip(
            "addr",
            "add",
            f"{site.ip}/32",
            "peer",
            f"{self.centre_ip}/32",
            "dev",
            site.site_iface,
            netns=s,
        )
        _ip("link", "set", site.central_iface, "up", netns=c)
        _ip("link", "set", site.site_iface, "up", netns=s)
        # The site knows the centre's MAC for good: when the link is cut, the kernel flushes
        # learned neighbours on carrier loss and a new connection would then fail fast with
        # "no route to host" after ARP gives up. A pulled cable gives silence: packets dropped.
        mac = json.loads(_ip("-j", "link", "show", "dev", site.central_iface, netns=c))[0][
            "address"
        ]
        _ip(
            "neigh",
            "replace",
            self.centre_ip,
            "lladdr",
            mac,
            "dev",
            site.site_iface,
            "nud",
            "permanent",
            netns=s,
        )

    def close(self, *, failed: bool = False) -> None:
        """Everything the rig made, in an order that leaves nothing behind: its processes
        (and anything else still inside its namespaces), the forwarders (their sockets hold
        the central namespace), the namespaces (their veths go with them), the marker.
        Idempotent; runs every step even when one fails, then raises the first error."""
        if self._closed or not self._started:
            return
        self._closed = True
        errors: list[BaseException] = []

        def step(what: Callable[[], object]) -> None:
            try:
                what()
            except BaseException as exc:
                errors.append(exc)

        for proc in self._processes:  # all told at once, so they stop side by side
            step(proc.terminate)
        for proc in self._processes:
            step(proc.stop)
        names = [*(s.netns for s in self.sites.values()), self.central_netns]
        for name in names:
            step(functools.partial(_kill_netns_pids, name))
        if self._thread is not None:
            thread = self._thread
            for fwd in [*self._forwarders.values(), *self._exposed.values()]:
                step(functools.partial(thread.stop_forwarder, fwd))
            step(thread.stop)
        for name in names:
            step(functools.partial(_remove_netns, name))
        step(lambda: self.marker.unlink(missing_ok=True))
        if self._own_log_dir and not failed and not errors:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        elif self._own_log_dir:
            log.warning("netns rig %s: process logs kept in %s", self.prefix, self.log_dir)
        if errors:
            raise errors[0]

    def leftovers(self) -> list[str]:
        """What of this rig still exists: namespaces, processes inside them (found by the
        namespaces' inodes, so also processes that left their process group), its interfaces
        in the root namespace, the forwarder thread, the marker. Empty after `close`."""
        found = [f"namespace {n}" for n in self._inodes if (NETNS_DIR / n).exists()]
        inodes = set(self._inodes.values())
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.stat(entry / "ns" / "net").st_ino in inodes and _alive(int(entry.name)):
                    found.append(f"process {entry.name} inside a rig namespace")
            except OSError:
                continue  # gone meanwhile
        for thread in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                if os.stat(thread / "ns" / "net").st_ino in inodes:
                    found.append(f"thread {thread.name} of this process inside a rig namespace")
        root_links = _ip("-o", "link", "show", check=False)
        found += [f"root interface {w}" for w in root_links.split() if f"f{self.token}" in w]
        if self._thread is not None and self._thread.alive:
            found.append("forwarder thread")
        if self.marker.exists():
            found.append(f"marker {self.marker}")
        return found

    def __enter__(self) -> TestNetwork:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failed=exc is not None)

    async def __aenter__(self) -> TestNetwork:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close, failed=exc is not None)

    # -- hosts and addresses ------------------------------------------------------------------

    def netns(self, host: str) -> str:
        """The namespace name of a site or of CENTRAL."""
        if host == CENTRAL:
            return self.central_netns
        if host not in self.sites:
            raise KeyError(f"no host {host!r} in this rig; sites: {', '.join(self.sites)}")
        return self.sites[host].netns

    def ip_of(self, host: str) -> str:
        return self.centre_ip if host == CENTRAL else self.sites[host].ip

    # -- forwarders to the root namespace ----------------------------------------------------

    def forward(
        self, port: int, *, target_port: int | None = None, target_host: str = "127.0.0.1"
    ) -> Forwarder:
        """centre_ip:port (inside the central namespace) forwarded to target_host:target_port
        (default: the same port on the root namespace's loopback). Idempotent per port."""
        if port in self._forwarders:
            return self._forwarders[port]
        fwd = Forwarder((self.centre_ip, port), (target_host, target_port or port))

        def listen() -> socket.socket:
            sock = socket.create_server((self.centre_ip, port), backlog=128)
            sock.setblocking(False)
            return sock

        self._start_forwarder(fwd, in_netns(self.central_netns, listen))
        self._forwarders[port] = fwd
        return fwd

    def forwarder(self, port: int) -> Forwarder:
        return self._forwarders[port]

    def expose(self, host: str, port: int) -> Forwarder:
        """The test's own window into a host: a free port on the root namespace's loopback
        (`.listen`) forwarded to 127.0.0.1:port inside `host`, so the test process can use an
        ordinary client (a PLC driver to check a register, httpx on the fault control) on a
        site's loopback. Not a network path: it does not cross the site's link, so a cut does
        not affect it."""
        key = (host, port)
        if key in self._exposed:
            return self._exposed[key]
        sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        sock.setblocking(False)
        fwd = Forwarder(sock.getsockname()[:2], ("127.0.0.1", port), target_netns=self.netns(host))
        self._start_forwarder(fwd, sock)
        self._exposed[key] = fwd
        return fwd

    def _start_forwarder(self, fwd: Forwarder, sock: socket.socket) -> None:
        if self._thread is None:
            self._thread = _ForwarderThread()
        try:
            self._thread.run(fwd.start(sock))
        except BaseException:
            sock.close()
            raise

    def site_env(self, settings: Settings, **overrides: str) -> dict[str, str]:
        """The caller's environment for a product process at a site: PostgreSQL and Temporal
        of `settings` reached through the centre's forwarders (made here if missing), plus
        FACTORYLM_* overrides (`plant_file="…"` → FACTORYLM_PLANT_FILE)."""
        t_host, _, t_port = settings.temporal_address.rpartition(":")
        self.forward(settings.pg_port, target_host=_loopback(settings.pg_host))
        self.forward(int(t_port), target_host=_loopback(t_host))
        return {
            **os.environ,
            "FACTORYLM_PG_HOST": self.centre_ip,
            "FACTORYLM_PG_PORT": str(settings.pg_port),
            "FACTORYLM_PG_DATABASE": settings.pg_database,
            "FACTORYLM_TEMPORAL_ADDRESS": f"{self.centre_ip}:{t_port}",
            "FACTORYLM_TEMPORAL_NAMESPACE": settings.temporal_namespace,
            **{f"FACTORYLM_{name.upper()}": value for name, value in overrides.items()},
        }

    # -- processes in the hosts --------------------------------------------------------------

    def run_in(
        self,
        host: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path = PROJECT_ROOT,
        name: str | None = None,
    ) -> HostProcess:
        """`argv` started inside `host` (a site or CENTRAL) with `ip netns exec`, in a process
        group of its own, with `env` as its whole environment (default: the caller's); its
        output goes to log_dir/<name>.log. The rig stops it on exit."""
        netns = self.netns(host)
        label = name or f"{host}-{Path(argv[0]).name}-{len(self._processes)}"
        log_path = self.log_dir / f"{label}.log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv],
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() signals all it started
            )
        proc = HostProcess(host, list(argv), popen, log_path)
        self._processes.append(proc)
        return proc

    async def exec_in(
        self,
        host: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        timeout_s: float = 60.0,
        cwd: Path = PROJECT_ROOT,
    ) -> subprocess.CompletedProcess[str]:
        """`argv` run to its end inside `host`; its exit code, stdout and stderr. Killed (the
        whole group) and a TimeoutError after `timeout_s`."""
        proc = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self.netns(host),
            *argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise TimeoutError(f"{argv[0]} in {host} ran over {timeout_s:g} s") from None
        code = proc.returncode
        assert code is not None
        return subprocess.CompletedProcess(
            list(argv), code, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def simulate(
        self,
        site: str,
        plant_file: Path,
        *,
        control_port: int = 15099,
        timeout_s: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> HostProcess:
        """`factorylm simulate` for `plant_file` inside `site`, started: every PLC of the file
        served on the site's own loopback (each site may use the same ports), its fault
        control on 127.0.0.1:control_port there (`inject`)."""
        proc = self.run_in(
            site,
            [sys.executable, "-m", "app.cli", "simulate", "--control-port", str(control_port)],
            {**(env if env is not None else os.environ), "FACTORYLM_PLANT_FILE": str(plant_file)},
            name=f"{site}-simulator-{len(self._processes)}",
        )
        await proc.wait_for_output("fault control on", timeout_s=timeout_s)
        return proc

    async def inject(
        self,
        site: str,
        *,
        plc: str,
        kind: str,
        metric: str | None = None,
        size: str = "0",
        control_port: int = 15099,
    ) -> dict[str, dict[str, str]]:
        """`factorylm simulate inject` against the simulator of `site` (its control channel is
        on that site's loopback); the simulator's active faults, per PLC and metric, e.g.
        {"tank-a": {"level": "step +6σ"}}."""
        argv = [sys.executable, "-m", "app.cli", "simulate", "inject", "--plc", plc]
        argv += ["--kind", kind, "--size", size, "--control-port", str(control_port)]
        if metric:
            argv += ["--metric", metric]
        done = await self.exec_in(site, argv)
        if done.returncode != 0:
            raise RuntimeError(f"inject at {site} failed: {done.stderr.strip()}")
        faults: dict[str, dict[str, str]] = json.loads(done.stdout.strip().splitlines()[-1])
        return faults

    # -- the links ---------------------------------------------------------------------------

    def cut(self, site: str) -> None:
        """The site's link to the centre down, like a pulled cable: its packets are dropped
        (the centre's end is down, the site's end loses carrier), nobody answers with a reset,
        and open TCP connections on both sides stay open, retransmitting."""
        s = self.sites[site]
        _ip("link", "set", s.central_iface, "down", netns=self.central_netns)
        self._cut.add(site)

    def restore(self, site: str) -> None:
        """The link back up: open connections resume at their next retransmission (TCP's
        backoff: after a long cut that can be tens of seconds later)."""
        s = self.sites[site]
        _ip("link", "set", s.central_iface, "up", netns=self.central_netns)
        self._cut.discard(site)

    def is_cut(self, site: str) -> bool:
        return site in self._cut

    @contextlib.contextmanager
    def outage(self, site: str) -> Iterator[None]:
        """`with net.outage("a"):` — cut for the block, restored after it even on error."""
        self.cut(site)
        try:
            yield
        finally:
            self.restore(site)


def _loopback(host: str) -> str:
    """The root-namespace address a forwarder connects to for a service's configured host."""
    return "127.0.0.1" if host in ("localhost", "") else host
