"""The project-owned PostgreSQL cluster (TimescaleDB + pgvector) under the state directory.

PostgreSQL refuses to run as root, so when we are root the server binaries run as the
`postgres` system user and the data directory is handed to it; as an ordinary user the cluster
simply belongs to that user. Either way the superuser role is `postgres` and the server
listens on loopback only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from factorylm.settings import Settings

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class ClusterError(RuntimeError):
    """The cluster could not be created or started; the message says where to look."""


@dataclass(frozen=True)
class Cluster:
    data_dir: Path
    log_file: Path
    socket_dir: Path
    port: int
    host: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Cluster:
        state = settings.state_dir.resolve()
        return cls(
            data_dir=state / "pgdata",
            log_file=state / "log" / "postgres.log",
            socket_dir=state / "run",
            port=settings.pg_port,
            host=settings.pg_host,
        )

    # -- helpers -----------------------------------------------------------------------------
    def _run_as(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def _chown_for_server(self, *paths: Path) -> None:
        if os.geteuid() != 0:
            return
        pg = pwd.getpwnam("postgres")
        for path in paths:
            os.chown(path, pg.pw_uid, pg.pw_gid)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*self._run_as(), str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=check)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log yet)"
        return "\n".join(text[-lines:])

    # -- lifecycle ---------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized():
            return
        if not (PG_BIN / "initdb").exists():
            raise ClusterError(
                f"PostgreSQL 15 server binaries not found in {PG_BIN}. "
                "Run `make setup` (scripts/install-postgres.sh) first."
            )
        for path in (self.data_dir, self.log_file.parent, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._chown_for_server(self.data_dir, self.log_file.parent, self.socket_dir)
        cmd = [
            *self._run_as(),
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise ClusterError(f"initdb failed:\n{result.stderr.strip()}")
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            # Loopback only: the embedded cluster trusts local connections.
            handle.write(
                "\n# factorylm\n"
                "shared_preload_libraries = 'timescaledb'\n"
                "timescaledb.telemetry_level = off\n"
                f"listen_addresses = '{self.host}'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\n"
                "shared_buffers = 512MB\n"
                # A crash may lose the last few hundred ms of commits, never consistency.
                "synchronous_commit = off\n"
            )

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._pg_ctl("status", check=False).returncode == 0

    def accepting(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start the cluster; returns False when it was already running."""
        self.init()
        if self.running():
            return False
        if self.accepting():
            raise ClusterError(
                f"port {self.port} on {self.host} is taken by another server; "
                "set FACTORYLM_PG_PORT to a free port"
            )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._chown_for_server(self.log_file.parent)
        result = self._pg_ctl(
            "-l",
            str(self.log_file),
            "-o",
            f"-p {self.port}",
            "-w",
            "-t",
            str(int(timeout_s)),
            "start",
            check=False,
        )
        deadline = time.monotonic() + timeout_s
        while result.returncode == 0 and not self.accepting() and time.monotonic() < deadline:
            time.sleep(0.1)
        if result.returncode != 0 or not self.accepting():
            raise ClusterError(
                f"PostgreSQL did not start.\n--- last lines of {self.log_file} ---\n"
                f"{self.log_tail()}\n--- look further: less {self.log_file}"
            )
        return True

    def stop(self) -> bool:
        """Stop the cluster (fast shutdown: committed data is kept); False if not running."""
        if not self.running():
            return False
        self._pg_ctl("-m", "fast", "-w", "stop")
        return True
