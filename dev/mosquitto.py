"""A real Mosquitto broker for the demo, the tests and the benchmarks.

Debian's `mosquitto` package (installed by scripts/setup.sh) installs the broker without
starting a service; this runs it as a child process with its own configuration file in a
working directory: a plain listener on a loopback port, optionally a TLS listener (a CA and a
server certificate generated into the directory at start), optionally username/password
(a password file made with `mosquitto_passwd`), and persistence, so that a persistent
session's queued QoS 1 messages survive a broker restart (`restart()` keeps the ports and the
directory).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import getpass
import ipaddress
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dev.fakes.server import free_port
from factorylm.plant import Plant, Plc
from factorylm.protocols import Protocol

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """Mosquitto is missing, or did not start; the message says what to do."""


def _binary(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        raise BrokerError(
            f"{name} is not installed: run `make setup` (scripts/setup.sh installs Debian's "
            "mosquitto package)"
        )
    return path


def _write_certificates(directory: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost; returns the CA file."""
    now = _dt.datetime.now(_dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FactoryLM test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "server.crt").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "server.key").chmod(0o600)
    return directory / "ca.crt"


class Mosquitto:
    """`async with Mosquitto(...) as broker:` a running broker on free loopback ports."""

    def __init__(
        self,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        tls: bool = False,
        persistence: bool = True,
        directory: Path | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls_port: int | None = free_port() if tls else None
        self.users = dict(users or {})
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="factorylm-mosquitto-"))
        self.persistence = persistence
        self.ca_file: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.log_file = self.directory / "mosquitto.log"
        self._configure()

    def _configure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Started as root, mosquitto would switch to the `mosquitto` user and then be unable to
        # read this directory; it stays the user that started it.
        lines = [f"user {getpass.getuser()}", "per_listener_settings false"]
        lines += [f"log_dest file {self.log_file}"]
        lines += ["log_type error", "log_type warning", "log_type notice"]
        if self.persistence:
            (self.directory / "data").mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.directory / 'data'}/"]
        # A persistent session keeps what arrives while its client is away; the defaults (1000
        # messages) would drop a few seconds of a busy plant's data during a short disconnect.
        lines += ["max_queued_messages 200000", "max_inflight_messages 100"]
        # Sparkplug edge nodes publish data at QoS 0; without this a persistent session keeps
        # only QoS 1/2 messages for its client while it is away, and the data would be lost.
        lines += ["queue_qos0_messages true"]
        if self.users:
            passwords = self.directory / "passwords"
            passwords.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    [_binary("mosquitto_passwd"), "-b", str(passwords), user, password],
                    check=True,
                    capture_output=True,
                )
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines += ["allow_anonymous true"]
        lines += [f"listener {self.port} {self.host}"]
        if self.tls_port is not None:
            self.ca_file = _write_certificates(self.directory)
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.ca_file}",
                f"certfile {self.directory / 'server.crt'}",
                f"keyfile {self.directory / 'server.key'}",
            ]
        (self.directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self._process = _spawn(self.directory / "mosquitto.conf")
        deadline = time.monotonic() + timeout_s
        ports = [p for p in (self.port, self.tls_port) if p is not None]
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                text = self.log_file.read_text() if self.log_file.exists() else ""
                raise BrokerError(f"mosquitto exited at start: {err.strip()} {text[-800:]}")
            if all(_accepts(self.host, p) for p in ports):
                log.info("mosquitto on %s:%d (pid %d)", self.host, self.port, self._process.pid)
                return
            await asyncio.sleep(0.02)
        await self.stop()
        raise BrokerError(f"mosquitto did not listen on {ports} within {timeout_s:g} s")

    async def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file on the way out), then wait."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 5)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Mosquitto:
        await self.start()
        return self

    async def close(self) -> None:
        """Stop it and remove its directory (when it made its own)."""
        await self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


MQTT_PROTOCOLS = frozenset({Protocol.SPARKPLUG_B, Protocol.MQTT_JSON})


async def start_brokers(plant: Plant, plcs: list[Plc] | None = None) -> list[Mosquitto]:
    """A broker on each loopback address the plant's MQTT entries (of `plcs`, or all of
    them, and its `publish:`) name where none listens yet: the simulated plant's own broker,
    as a real plant has one. Entries with TLS or a user name need a broker set up for them."""
    endpoints: list[tuple[str, int]] = []
    for plc in plcs if plcs is not None else plant.plcs:
        if plc.protocol in MQTT_PROTOCOLS and not plc.tls and plc.username is None:
            endpoints.append((plc.host, plc.tcp_port))
    # The publisher's broker too, when the plant simulates one for its MQTT entries anyway.
    if plant.publish is not None and plcs is None and endpoints and not plant.publish.tls:
        endpoints.append((plant.publish.host, plant.publish.port))
    started: list[Mosquitto] = []
    try:
        for host, port in dict.fromkeys(endpoints):
            if host in ("127.0.0.1", "localhost") and not _accepts("127.0.0.1", port):
                broker = Mosquitto(port=port)
                await broker.start()
                started.append(broker)
    except BaseException:
        for broker in started:
            await broker.close()
        raise
    return started


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_binary("mosquitto"), "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the terminal's Ctrl-C stops the demo, which stops this
    )


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
