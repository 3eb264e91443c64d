"""docker-compose.yml as Docker Compose itself renders it (`docker compose config`, no engine),
with a sample .env: every service gets what its process reads (app/deployment.py), no secret
reaches a service that does not use it, Temporal is not published, the Web UI only on loopback.

The renderer is Docker Compose v2 built by scripts/install-compose.sh (make setup); without it
these tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from app.deployment import (
    DEPLOYMENT_SECRETS,
    EXTRA_ENVIRONMENT,
    FIXED,
    OWNER_PASSWORD_VARIABLE,
    REQUIRED_SETTINGS,
    ROLE_OF,
    ROLES,
    SETTINGS,
    Process,
    env_name,
    is_secret,
    processes_reading,
)
from factorylm.settings import PROJECT_ROOT, Settings, load_settings, reveal
from ingest.writer import BatchWriter

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"


def renderer() -> Path:
    script = PROJECT_ROOT / "scripts" / "install-compose.sh"
    path = Path(
        subprocess.run(
            ["bash", str(script), "--path"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"the compose renderer is missing ({path}): run scripts/install-compose.sh "
            "(make setup does)"
        )
    return path


def sample_env() -> dict[str, str]:
    """A value for every variable the compose file takes from the environment, each one unique
    so that where it lands in the rendered file says where it was passed."""
    env = {}
    for names in SETTINGS.values():
        for name in names - FIXED:
            env[env_name(name)] = f"sample-{name}-{secrets.token_hex(6)}"
    for variable in DEPLOYMENT_SECRETS:
        env[variable] = f"sample-{variable.lower()}-{secrets.token_hex(6)}"
    for names in EXTRA_ENVIRONMENT.values():
        for name in names:
            env[name] = f"sample-{name.lower()}"
    return env


def render(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "sample.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    # A clean environment: nothing of the developer's shell (FACTORYLM_*, a .env beside the
    # file) may take part in the rendering.
    return subprocess.run(
        [
            str(renderer()),
            "--file",
            str(COMPOSE_FILE),
            "--project-directory",
            str(PROJECT_ROOT),
            "--env-file",
            str(env_file),
            "--profile",
            "simulator",
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return sample_env()


@pytest.fixture(scope="module")
def rendered(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = render(env, tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


def services(rendered: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = rendered["services"]
    return found


def environment(rendered: dict[str, Any], service: str) -> dict[str, str | None]:
    return dict(services(rendered)[service].get("environment") or {})


def test_the_renderer_is_docker_compose_v2() -> None:
    out = subprocess.run([str(renderer()), "version"], capture_output=True, text=True, check=True)
    assert re.search(r"Docker Compose version v2\.\d+\.\d+", out.stdout), out.stdout


def test_every_process_has_its_service(rendered: dict[str, Any]) -> None:
    assert {p.value for p in Process} <= set(services(rendered))


def test_every_service_gets_every_setting_its_process_reads(
    rendered: dict[str, Any], env: dict[str, str]
) -> None:
    for process, names in SETTINGS.items():
        got = environment(rendered, process.value)
        for name in sorted(names - FIXED):
            assert got.get(env_name(name)) == env[env_name(name)], f"{process}: {name}"
        for name in sorted(names & FIXED):
            assert got.get(env_name(name)) not in (None, ""), f"{process}: {name} is not set"
        for name in EXTRA_ENVIRONMENT.get(process, frozenset()):
            assert got.get(name) == env[name], f"{process}: {name}"


def test_no_service_gets_a_setting_its_process_does_not_read(rendered: dict[str, Any]) -> None:
    for process, names in SETTINGS.items():
        passed = {k for k in environment(rendered, process.value) if k.startswith("FACTORYLM_")}
        assert passed == {env_name(n) for n in names}, process
    # The other services run no FactoryLM code and get no FactoryLM setting.
    for service in set(services(rendered)) - {p.value for p in Process}:
        leaked = [k for k in environment(rendered, service) if k.startswith("FACTORYLM_")]
        assert not leaked, f"{service}: {leaked}"


def test_a_secret_reaches_only_the_services_that_use_it(
    rendered: dict[str, Any], env: dict[str, str]
) -> None:
    allowed: dict[str, set[str]] = {
        env_name(name): {p.value for p in processes_reading(name)}
        for p in Process
        for name in SETTINGS[p] - FIXED
        if is_secret(name)
    }
    allowed |= {variable: set(where) for variable, where in DEPLOYMENT_SECRETS.items()}
    # Assumed, not only checked: the hosted services' secrets are among those traced.
    assert {
        "FACTORYLM_TWILIO_AUTH_TOKEN",
        "FACTORYLM_ANTHROPIC_API_KEY",
        "FACTORYLM_TRELLO_TOKEN",
        "FACTORYLM_ATLAS_PASSWORD",
    } <= set(allowed)
    for service, definition in services(rendered).items():
        text = json.dumps(definition)  # everything: environment, command, labels, healthcheck
        for variable, where in allowed.items():
            if service not in where:
                assert env[variable] not in text, f"{variable} reaches {service}"
            else:
                assert env[variable] in text, f"{variable} does not reach {service}"


def test_the_edge_worker_and_ingest_get_no_hosted_service_secret(
    rendered: dict[str, Any], env: dict[str, str]
) -> None:
    for service in ("plc-edge", "ingest"):
        text = json.dumps(services(rendered)[service])
        for prefix in ("TWILIO", "ANTHROPIC", "GEMINI", "TRELLO", "ATLAS", "API_TOKEN"):
            leaked = [k for k in env if prefix in k and env[k] in text]
            assert not leaked, f"{service}: {leaked}"


def test_each_process_connects_to_postgres_as_its_own_role(
    rendered: dict[str, Any], env: dict[str, str]
) -> None:
    users = {}
    for process, role in ROLE_OF.items():
        got = environment(rendered, process.value)
        assert got["FACTORYLM_PG_USER"] == role.name, process
        assert got["FACTORYLM_PG_PASSWORD"] == env[role.password_variable], process
        users[process] = role.name
    assert len(set(users.values())) == len(users)  # no two processes share a role
    owner = environment(rendered, Process.MIGRATE.value)
    assert owner["FACTORYLM_PG_USER"] == "postgres"
    assert owner["FACTORYLM_PG_PASSWORD"] == env[OWNER_PASSWORD_VARIABLE]
    grafana = environment(rendered, "grafana")
    assert grafana["GRAFANA_DB_USER"] == "grafana_reader"


def test_processes_start_after_the_owner_has_migrated_and_set_the_roles(
    rendered: dict[str, Any],
) -> None:
    svc = services(rendered)
    assert svc["migrate"]["command"] == ["db", "migrate"]
    assert svc["db-roles"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for process in ROLE_OF:
        condition = svc[process.value]["depends_on"]["db-roles"]["condition"]
        assert condition == "service_completed_successfully", process


def test_temporal_is_not_published_and_the_web_ui_only_on_loopback(
    rendered: dict[str, Any],
) -> None:
    svc = services(rendered)
    networks = rendered["networks"]
    assert not svc["temporal"].get("ports"), svc["temporal"].get("ports")
    # Temporal and PostgreSQL sit on internal networks only: no route to or from outside.
    for name in ("temporal", "timescaledb"):
        for network in svc[name]["networks"]:
            assert networks[network].get("internal") is True, (name, network)
    for name, definition in svc.items():
        for port in definition.get("ports") or []:
            assert port["target"] != 7233 and str(port.get("published")) != "7233", name
            if name == "temporal-ui" or str(port.get("published")) == "8233":
                assert port.get("host_ip") == "127.0.0.1", (name, port)
    ui = svc["temporal-ui"]["ports"]
    assert [(p["host_ip"], str(p["published"]), p["target"]) for p in ui] == [
        ("127.0.0.1", "8233", 8080)
    ]


def _seconds(duration: str) -> float:
    """Go's duration notation as Compose prints it: 1m0s, 45s, 1m30s, 1h2m3.5s."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", duration)
    assert parts and duration, duration
    h, m, s = (float(p) if p else 0.0 for p in parts.groups())
    return h * 3600 + m * 60 + s


def test_ingest_stop_grace_outlasts_the_writer_drain(rendered: dict[str, Any]) -> None:
    drain = inspect.signature(BatchWriter.stop).parameters["timeout_s"].default
    assert isinstance(drain, float) and drain >= 30.0
    grace = _seconds(services(rendered)["ingest"]["stop_grace_period"])
    assert grace > drain + 10, (grace, drain)  # the drain plus the rest of the stop


@pytest.mark.parametrize(
    "variable",
    sorted({*DEPLOYMENT_SECRETS, *(env_name(n) for n in REQUIRED_SETTINGS)}),
)
def test_rendering_refuses_a_missing_required_variable(
    variable: str, env: dict[str, str], tmp_path: Path
) -> None:
    result = render({k: v for k, v in env.items() if k != variable}, tmp_path)
    assert result.returncode != 0
    assert variable in result.stderr


def _scram_matches(verifier: str, password: str) -> bool:
    """Whether PostgreSQL's SCRAM-SHA-256 verifier was made from `password` (RFC 5802)."""
    method, _, rest = verifier.partition("$")
    iterations_salt, _, keys = rest.partition("$")
    iterations, _, salt = iterations_salt.partition(":")
    stored_key, _, server_key = keys.partition(":")
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return (
        method == "SCRAM-SHA-256"
        and base64.b64decode(stored_key) == hashlib.sha256(client_key).digest()
        and base64.b64decode(server_key) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    )


def test_the_db_roles_step_gives_each_role_login_with_its_password_from_the_environment(
    rendered: dict[str, Any], env: dict[str, str], base_settings: Settings, postgres: None
) -> None:
    """The `db-roles` one-shot's own script and environment, as rendered, run with psql against
    the real cluster (the roles are the cluster's: they are put back without LOGIN after)."""
    step = services(rendered)["db-roles"]
    assert step["entrypoint"] == ["sh", "-c"]
    script = step["command"][0]
    step_env = {k: str(v) for k, v in step["environment"].items()}
    for role in ROLES:  # the passwords come from the environment, never the script
        assert env[role.password_variable] not in script
    step_env.update(
        PATH=os.environ["PATH"],
        PGHOST=base_settings.pg_host,
        PGPORT=str(base_settings.pg_port),
        PGDATABASE=base_settings.pg_database,
        PSQLRC="/dev/null",
    )
    step_env.pop("PGPASSWORD")  # the embedded cluster trusts loopback

    async def roles() -> dict[str, tuple[bool, str | None]]:
        conn = await asyncpg.connect(base_settings.pg_dsn)
        try:
            rows = await conn.fetch(
                "SELECT rolname, rolcanlogin, rolpassword FROM pg_authid "
                "WHERE rolname = ANY($1::text[])",
                [role.name for role in ROLES],
            )
            return {r["rolname"]: (r["rolcanlogin"], r["rolpassword"]) for r in rows}
        finally:
            await conn.close()

    async def reset() -> None:
        conn = await asyncpg.connect(base_settings.pg_dsn)
        try:
            for role in ROLES:
                await conn.execute(f"ALTER ROLE {role.name} NOLOGIN PASSWORD NULL")
        finally:
            await conn.close()

    try:
        result = subprocess.run(
            ["sh", "-c", script], env=step_env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        for role in ROLES:
            assert env[role.password_variable] not in result.stdout + result.stderr
        after = asyncio.run(roles())
        for role in ROLES:
            can_login, verifier = after[role.name]
            assert can_login, role.name
            assert verifier and _scram_matches(verifier, env[role.password_variable]), role.name
            assert not _scram_matches(verifier, env[role.password_variable] + "x")
    finally:
        asyncio.run(reset())


def test_each_service_environment_is_a_valid_configuration_for_its_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the required variables set, as a first deployment has them, each product
    service's rendered environment loads as its process's settings."""
    required = {variable: secrets.token_urlsafe(24) for variable in DEPLOYMENT_SECRETS}
    required["FACTORYLM_APPROVERS"] = "whatsapp:+15550100001,whatsapp:+15550100002"
    result = render(required, tmp_path)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    for process in Process:
        given = {k: v for k, v in environment(rendered, process.value).items() if v is not None}
        for name in list(os.environ):
            if name.startswith("FACTORYLM_"):
                monkeypatch.delenv(name)
        for name, value in given.items():
            monkeypatch.setenv(name, str(value))
        loaded = load_settings(_env_file=None)
        if process in ROLE_OF:
            assert loaded.pg_user == ROLE_OF[process].name
            assert reveal(loaded.pg_password) == required[ROLE_OF[process].password_variable]
        if "approvers" in SETTINGS[process]:
            assert loaded.approvers == ["whatsapp:+15550100001", "whatsapp:+15550100002"]
