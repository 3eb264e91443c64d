"""app/deployment.py against the Settings class and the code that reads settings: every setting
belongs to a process (or to the development stack), secrets are exactly the SecretStr settings,
and the settings each process's own modules read are among those its service is given."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pydantic import SecretStr

from app.deployment import (
    DEV_ONLY,
    FIXED,
    OWNER_PASSWORD_VARIABLE,
    POSTGRES,
    ROLE_OF,
    ROLES,
    SETTINGS,
    TABLE_PRIVILEGES,
    Process,
    env_name,
    is_secret,
    secrets_of,
)
from factorylm.settings import PROJECT_ROOT, Settings

FIELDS = set(Settings.model_fields)


def test_every_setting_is_read_by_a_process_or_is_dev_only() -> None:
    assigned = set().union(*SETTINGS.values())
    assert FIELDS - assigned - DEV_ONLY == set()


def test_the_mapping_names_only_settings() -> None:
    for process, names in SETTINGS.items():
        assert names <= FIELDS, (process, names - FIELDS)
    assert DEV_ONLY <= FIELDS and FIXED <= FIELDS
    assert not DEV_ONLY & set().union(*SETTINGS.values())  # dev-only means no process reads it


def test_secretness_is_the_settings_own_secret_type() -> None:
    # Set every field flagged secret to a marker: none shows in the settings' repr (which logs
    # and tracebacks print); a field not flagged is not SecretStr.
    flagged = {name for name in FIELDS if is_secret(name)}
    assert {"twilio_auth_token", "anthropic_api_key", "pg_password"} <= flagged
    values = {name: SecretStr(f"marker-{name}") for name in flagged}
    text = repr(Settings(**values))  # type: ignore[arg-type]
    assert not [name for name in flagged if f"marker-{name}" in text]
    for name in FIELDS - flagged:
        annotation = Settings.model_fields[name].annotation
        assert "SecretStr" not in repr(annotation), name


def test_the_edge_worker_and_the_ingest_hold_no_hosted_service_secret() -> None:
    hosted = ("twilio_", "anthropic_", "gemini_", "trello_", "atlas_", "api_token")
    for process in (Process.EDGE, Process.INGEST):
        assert not [s for s in secrets_of(process) if s.startswith(hosted)], process
    assert "twilio_auth_token" not in SETTINGS[Process.INGEST]


def test_every_process_that_connects_to_postgres_has_a_role() -> None:
    for process, names in SETTINGS.items():
        if POSTGRES <= names and process is not Process.MIGRATE:
            assert process in ROLE_OF, process
    assert len({r.name for r in ROLES}) == len(ROLES)


# Each process's own code: the modules that build it and whose settings reads all belong to it.
# (A module shared by several processes, e.g. factorylm/whatsapp.py's sender and signature
# check, is listed where all of its reads apply.)
CODE: dict[Process, tuple[str, ...]] = {
    Process.INGEST: ("ingest/*.py",),
    Process.EDGE: ("workers/plc_edge.py", "activities/plc_write.py"),
    Process.API: ("api/*.py", "factorylm/photos/store.py", "factorylm/budget.py"),
    Process.AGENTS: (
        "workers/agents.py",
        "temporal/schedules.py",
        "activities/[!p]*.py",
        "activities/photos.py",
        "activities/planning.py",
        "activities/agents/*.py",
        "factorylm/llm/*.py",
        "factorylm/photos/*.py",
        "factorylm/whatsapp.py",
        "factorylm/embeddings.py",
        "factorylm/memory.py",
        "factorylm/budget.py",
        "factorylm/trello/*.py",
        "factorylm/cmms/*.py",
        "app/commands/agents.py",
        "app/commands/monkey.py",
    ),
}
# Properties of Settings and the fields behind them.
DERIVED = {
    "pg_dsn": POSTGRES,
    "dsn_for": POSTGRES,
    "temporal_ui_url": frozenset({"temporal_address", "temporal_ui_port"}),
    "api_url": frozenset({"api_host", "api_port"}),
}


def settings_read(path: Path) -> set[str]:
    """Fields read as `<something>settings.<field>` (settings, self.settings, self._settings)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
        if not name.endswith("settings"):
            continue
        if node.attr in FIELDS:
            found.add(node.attr)
        found |= DERIVED.get(node.attr, frozenset())
    return found


def test_each_process_is_given_the_settings_its_code_reads() -> None:
    for process, patterns in CODE.items():
        files = sorted({f for p in patterns for f in PROJECT_ROOT.glob(p)})
        assert files, process
        read = set().union(*(settings_read(f) for f in files))
        assert read, process
        missing = read - SETTINGS[process]
        assert not missing, f"{process} reads {sorted(missing)} but its service is not given them"


def test_env_names_are_the_settings_environment_variables() -> None:
    assert env_name("twilio_auth_token") == "FACTORYLM_TWILIO_AUTH_TOKEN"
    assert Settings.model_config.get("env_prefix") == "FACTORYLM_"


def _table_after(marker: str) -> list[list[str]]:
    text = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    lines = text[text.index(marker) :].splitlines()[1:]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_operations_secrets_table_is_the_mapping() -> None:
    rows = {r[0].strip("`"): r for r in _table_after("<!-- secrets table")}
    assert set(rows) == {p.value for p in Process}
    for process in Process:
        listed = set(re.findall(r"`([A-Z_]+)`", rows[process.value][2]))
        role = ROLE_OF.get(process)
        expected = {env_name(s) for s in secrets_of(process) if s != "pg_password"}
        if role is not None:
            expected.add(role.password_variable)
        elif "pg_password" in SETTINGS[process]:
            expected.add(OWNER_PASSWORD_VARIABLE)
        assert listed == expected, process
        if role is not None:
            assert rows[process.value][1] == f"`{role.name}`", process


def test_the_operations_roles_table_is_the_mapping() -> None:
    rows = {r[0].strip("`"): r for r in _table_after("<!-- roles table")}
    assert set(rows) == {role.name for role in ROLES}
    for role in ROLES:
        documented = {
            table.strip(): privileges.strip()
            for table, _, privileges in (
                part.partition(":") for part in rows[role.name][2].split(";")
            )
        }
        declared = {
            table: ", ".join(p for p in TABLE_PRIVILEGES if p in privileges)
            for table, privileges in role.grants.items()
        }
        for table, by_privilege in role.column_grants.items():
            for privilege, columns in by_privilege.items():
                declared[table] = f"{privilege} ({', '.join(columns)})"
        # A table with both table and column grants is listed twice; the last one wins here.
        assert set(documented) == set(declared), role.name
        for table, privileges in declared.items():
            if table not in role.column_grants:
                assert documented[table] == privileges, (role.name, table)
