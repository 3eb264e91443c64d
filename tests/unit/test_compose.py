"""docker-compose.yml structure (Docker does not run on these machines)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from factorylm.settings import PROJECT_ROOT, Settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("ingest", "worker", "plc-edge", "api")
ONE_SHOTS = ("temporal-setup", "migrate", "db-roles")


def env_of(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[name].get("environment") or {}).items()}


def test_services_and_images() -> None:
    assert {"timescaledb", "temporal", "temporal-ui", "grafana", "simulator", *APP_SERVICES} <= set(
        SERVICES
    )
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:")
    assert SERVICES["simulator"]["profiles"] == ["simulator"]  # optional: only with --profile
    assert SERVICES["timescaledb"]["image"].startswith("timescale/timescaledb-ha:pg15")
    assert SERVICES["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert SERVICES["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert (
        env_of("temporal")["POSTGRES_SEEDS"] == "timescaledb"
    )  # Temporal persists on that Postgres
    for name in APP_SERVICES:
        assert SERVICES[name]["build"] == "."  # one Dockerfile for every process
    assert (PROJECT_ROOT / "Dockerfile").exists()


def test_ports() -> None:
    def published(name: str) -> set[int]:
        return {int(str(p).rsplit(":", 2)[-1]) for p in SERVICES[name].get("ports", [])}

    # Temporal is reachable only on the stack's network; the Web UI on the host's loopback
    # (tests/integration/test_compose_rendered.py checks the rendered file).
    assert "ports" not in SERVICES["temporal"]
    assert SERVICES["temporal-ui"]["ports"] == ["127.0.0.1:8233:8080"]
    assert 8000 in published("api")


def test_app_environment_names_are_settings() -> None:
    fields = {f"FACTORYLM_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        env = env_of(name)
        unknown = {k for k in env if k.startswith("FACTORYLM_")} - fields
        assert not unknown, f"{name}: {unknown} are not settings"
        assert env["FACTORYLM_PG_HOST"] == "timescaledb"
        assert env["FACTORYLM_TEMPORAL_ADDRESS"].startswith("temporal:")
    assert env_of("api")["FACTORYLM_API_HOST"] == "0.0.0.0"


def test_no_secret_is_written_in_the_file() -> None:
    secretish = re.compile(r"(PASSWORD|PWD|TOKEN|SECRET|KEY)$")
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            # A secret is interpolated (${VAR}) or passed through from the environment (no value).
            if secretish.search(key) and value is not None:
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), f"{name}.{key}"


def test_every_long_running_service_restarts_and_reports_health() -> None:
    for name, service in SERVICES.items():
        if name in ONE_SHOTS:
            assert "restart" not in service, name
            continue
        assert service.get("restart") == "unless-stopped", name
        if name != "temporal-ui":
            assert "healthcheck" in service, name
    for name in APP_SERVICES:
        assert SERVICES[name]["depends_on"]["timescaledb"]["condition"] == "service_healthy"


def test_state_lives_in_named_volumes() -> None:
    volumes = set(COMPOSE["volumes"])
    assert {"pgdata", "appdata", "grafanadata"} <= volumes
    mounts = " ".join(SERVICES["grafana"]["volumes"])
    assert "./grafana/provisioning:/etc/grafana/provisioning" in mounts
    assert "./grafana/dashboards:/var/lib/grafana/dashboards" in mounts


def test_the_state_volume_is_writable_by_the_process_user() -> None:
    # A named volume is seeded from the image's directory, ownership included: the directory
    # the app services mount `appdata` on must exist in the image, owned by the USER.
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)$", dockerfile, re.M)
    assert user is not None
    for name in ("worker", "api"):
        mounts = [v.split(":") for v in SERVICES[name]["volumes"]]
        assert ["appdata", "/var/lib/factorylm"] in mounts, name
        assert env_of(name)["FACTORYLM_STATE_DIR"] == "/var/lib/factorylm"
    assert re.search(rf"chown {user[1]} /var/lib/factorylm", dockerfile)
    # The ingest keeps only its store-and-forward spool, on a volume of its own; the edge
    # worker keeps no state: no volume but the plant file.
    assert SERVICES["ingest"]["volumes"] == ["./config:/app/config:ro", "spool:/var/lib/factorylm"]
    assert env_of("ingest")["FACTORYLM_STATE_DIR"] == "/var/lib/factorylm"
    assert SERVICES["plc-edge"]["volumes"] == ["./config:/app/config:ro"]
