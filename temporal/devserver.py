"""The embedded Temporal server: `temporal server start-dev` with SQLite persistence.

The CLI binary is built by temporal/install.sh into the machine-wide cache. The server runs
detached with a pid file under the state directory, so `factorylm temporal start` returns and
later commands (demo, workers, doctor) find it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from factorylm.settings import PROJECT_ROOT, Settings
from factorylm.temporal_client import SEARCH_ATTRIBUTES

INSTALL_SCRIPT = PROJECT_ROOT / "temporal" / "install.sh"


class DevServerError(RuntimeError):
    """The dev server could not be found or started; the message says where to look."""


def cli_path(settings: Settings) -> Path:
    return settings.cache_dir / f"temporal-{settings.temporal_version}" / "temporal"


def ensure_cli(settings: Settings) -> Path:
    path = cli_path(settings)
    if path.exists():
        return path
    env = dict(
        os.environ,
        TEMPORAL_CLI_VERSION=settings.temporal_version,
        FACTORYLM_CACHE=str(settings.cache_dir),
    )
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], env=env, capture_output=True, text=True)
    if result.returncode != 0 or not path.exists():
        raise DevServerError(f"building the Temporal CLI failed:\n{result.stderr[-2000:]}")
    return path


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        # When this process started the server it is our child: reap it, or it stays a zombie
        # that signal 0 still reports as alive.
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class DevServer:
    settings: Settings

    @property
    def host(self) -> str:
        return self.settings.temporal_address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.settings.temporal_address.rpartition(":")[2])

    @property
    def _dir(self) -> Path:
        return self.settings.state_dir / "temporal"

    @property
    def pid_file(self) -> Path:
        return self._dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.state_dir / "log" / "temporal.log"

    def command(self, binary: Path) -> list[str]:
        cmd = [
            str(binary),
            "server",
            "start-dev",
            "--db-filename",
            str(self._dir / "temporal.db"),
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.settings.temporal_ui_port),
            "--namespace",
            self.settings.temporal_namespace,
            "--log-level",
            "warn",
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
            "--dynamic-config-value",
            "system.forceSearchAttributesCacheRefreshOnRead=true",
        ]
        for key in SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", f"{key.name}=Keyword"]
        return cmd

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return port_open(self.host, self.port)

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start detached; False when a server already answers on the address."""
        if self.running():
            return False
        binary = ensure_cli(self.settings)
        self._dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                self.command(binary),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if self.running() and port_open(self.host, self.settings.temporal_ui_port):
                return True
            time.sleep(0.2)
        tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-25:])
        raise DevServerError(
            f"the Temporal dev server did not start on {self.settings.temporal_address}.\n"
            f"--- last lines of {self.log_file} ---\n{tail}\n"
            f"--- look further: less {self.log_file}"
        )

    def stop(self, timeout_s: float = 20.0) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGINT)  # the CLI shuts its server down cleanly on interrupt
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True
