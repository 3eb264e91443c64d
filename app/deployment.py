"""What each FactoryLM process needs in production, in one place: the settings it reads, the
PostgreSQL role it connects as, and that role's privileges.

`docker-compose.yml` gives every service exactly its process's settings (and so only the secrets
that process uses) and connects it as its own role; `factorylm db migrate`, run by the database
owner, converges the roles' privileges to `ROLES` after applying the migrations. The tests check
the compose file rendered by Docker Compose (tests/integration/test_compose_rendered.py) and the
privileges in a real database (tests/integration/test_db_roles.py) against this module, and this
module against the Settings class (tests/unit/test_deployment.py): a new setting or a new table
fails them until it is given to the processes that read it.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

import asyncpg
from pydantic import SecretStr

from factorylm.settings import Settings


class Process(StrEnum):
    """The product's processes; each is one compose service (the value is the service's name)."""

    INGEST = "ingest"  # collectors, batch writer, drift detector
    AGENTS = "worker"  # every workflow and every activity except PLC writes; operator commands
    EDGE = "plc-edge"  # PLC writes, on the plant network
    API = "api"  # webhooks, photos, approvals, operator reads
    MIGRATE = "migrate"  # one-shot, as the database owner: migrations, roles' privileges, tokens
    SIMULATOR = "simulator"  # optional (--profile simulator): simulated PLCs


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


def _prefixed(prefix: str, *, but: frozenset[str] = frozenset()) -> frozenset[str]:
    return frozenset(n for n in Settings.model_fields if n.startswith(prefix)) - but


POSTGRES = _prefixed("pg_")
# Connecting to Temporal: address, namespace, mTLS and API key; and the payload keys, since every
# process that talks to Temporal sends or receives encrypted payloads. The Temporal CLI's version
# and the embedded UI's port belong to the development server.
TEMPORAL = _prefixed("temporal_", but=_fields("temporal_version", "temporal_ui_port")) | _fields(
    "payload_keys"
)
# Every process that runs the product's code: the database, Temporal and the plant file.
PRODUCT_PROCESS = POSTGRES | TEMPORAL | _fields("plant_file")

TWILIO_SENDER = _fields(
    "twilio_account_sid",
    "twilio_auth_token",
    "twilio_whatsapp_from",
    "twilio_api_base_url",
    "twilio_approval_template_sid",
    "twilio_sms_from",
    "twilio_timeout_s",
    # Every sender passes the status-callback URL (public_url) and finds the person on call.
    "public_url",
    "roster_file",
    "plant_timezone",
    "approvers",
    "approval_timeout_s",
)
LLM = _prefixed("anthropic_") | _prefixed("gemini_") | _prefixed("llm_")
BUDGET = _prefixed("budget_")
PHOTO_STORE = _fields("photo_store", "photo_dir", "state_dir")

SETTINGS: typing.Mapping[Process, frozenset[str]] = MappingProxyType(
    {
        # ingest/service.py, app/stack.py (drift_config); it starts drift workflows.
        Process.INGEST: PRODUCT_PROCESS
        | _fields("task_queue", "batch_max_rows", "batch_max_delay_s", "buffer_max_rows")
        | _prefixed("spool_")
        | _fields("state_dir")  # the spool's default directory
        | _fields("site")  # the one site an edge's ingest collects for
        | _prefixed("drift_")
        # ingest/alert_notifier.py: collector alerts to the person on call (no Twilio secret:
        # a notice workflow sends them).
        | _fields("roster_file", "plant_timezone", "approval_timeout_s", "grafana_url")
        # ingest/alarms.py: flood and chattering limits; a flood's message goes to the on-duty.
        | _prefixed("alarm_")
        | _fields("approvers"),
        # workers/agents.py (its activities' constructors), temporal/schedules.py, and the
        # operator commands run in this container (manuals, trello, monkey, agents).
        Process.AGENTS: PRODUCT_PROCESS
        | TWILIO_SENDER
        | LLM
        | BUDGET
        | PHOTO_STORE
        | _prefixed("atlas_")
        | _prefixed("baseline_")
        | _prefixed("monkey_")
        | _fields("raw_retention_days", "rollup_lookback_minutes", "lifecycle_every_s")
        | _fields("spool_max_bytes")  # the health monitor's spool checks (temporal/schedules.py)
        | _prefixed("embedding_")
        | _fields(
            "task_queue",
            "plc_task_queue",
            "approvers",
            "approval_timeout_s",
            "approval_validity_s",
            "outcome_wait_hours",
            "cmms",
            "memory_ef_search",
            "photo_gemini_attempts",
            "photo_review_below_confidence",
            "health_every_s",
            "daily_summary_at",
            "alarm_flood_alarms",  # the daily summary's time in flood
            "plant_timezone",
            "grafana_url",
            # activities/notify.py links messages to the Web UI (temporal_ui_url).
            "temporal_ui_port",
            "trello_api_key",
            "trello_token",
            "trello_board_id",
            "trello_base_url",
        ),
        # workers/plc_edge.py, activities/plc_write.py: the catalog, the approvers, the validity.
        Process.EDGE: PRODUCT_PROCESS
        | _fields("plc_task_queue", "site", "approvers", "approval_validity_s")
        # the roster's people approve too (factorylm/roster.py)
        | _fields("roster_file", "plant_timezone", "approval_timeout_s"),
        # api/app.py and its routes: tokens, Twilio's and Trello's webhook signatures, WhatsApp
        # media downloads, photo intake, the budget view, the Monkey's workflow id.
        Process.API: PRODUCT_PROCESS
        # api/twilio_status.py: a failed WhatsApp message falls back to SMS from here.
        | TWILIO_SENDER
        | BUDGET
        | PHOTO_STORE
        | _fields(
            "api_host",
            "api_port",
            "api_token",
            "public_url",
            "task_queue",
            "approvers",
            "approval_timeout_s",
            "photo_max_bytes",
            "photo_max_pixels",
            "photo_decode_concurrency",
            "photo_asset_wait_s",
            "twilio_account_sid",
            "twilio_auth_token",
            "trello_app_secret",
            "monkey_workflow_id",
            "alarm_shelve_max_s",  # SHELVE replies (factorylm/alarms.py)
            "drift_threshold_sigma",  # the plant board's ±threshold band (api/board.py)
            # api/app.py admits the Web UI's origin (temporal_ui_url) to the codec endpoint.
            "temporal_ui_port",
        ),
        # `factorylm db migrate` and `factorylm tokens`, which checks approvers' identities.
        Process.MIGRATE: POSTGRES | _fields("approvers"),
        # `factorylm simulate`: the plant file's PLCs.
        Process.SIMULATOR: _fields("plant_file"),
    }
)

# Settings no production process reads: the embedded development stack's (make demo, make test).
DEV_ONLY = _fields("cache_dir", "temporal_version")

# Settings the compose file fixes (the stack's own addresses and paths); every other setting of a
# process is passed through from the environment (.env or the secret store) when it is set.
FIXED = _fields(
    "pg_host",
    "pg_port",
    "pg_user",
    "pg_password",
    "pg_database",
    "temporal_address",
    "temporal_namespace",
    "plant_file",
    "state_dir",
    "api_host",
    "api_port",
)

# Variables that are not settings but that the processes read (OpenTelemetry's exporter).
EXTRA_ENVIRONMENT: typing.Mapping[Process, frozenset[str]] = MappingProxyType(
    {
        p: _fields("OTEL_EXPORTER_OTLP_ENDPOINT")
        for p in (Process.INGEST, Process.AGENTS, Process.EDGE, Process.API)
    }
)


def env_name(setting: str) -> str:
    return f"FACTORYLM_{setting.upper()}"


def is_secret(setting: str) -> bool:
    """A setting whose type is SecretStr (optional or not): never printed, never logged."""
    annotation = Settings.model_fields[setting].annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def secrets_of(process: Process) -> frozenset[str]:
    return frozenset(s for s in SETTINGS[process] if is_secret(s))


def processes_reading(setting: str) -> frozenset[Process]:
    return frozenset(p for p, names in SETTINGS.items() if setting in names)


# -- PostgreSQL roles ---------------------------------------------------------------------------

Privilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE"]
TABLE_PRIVILEGES: tuple[Privilege, ...] = ("SELECT", "INSERT", "UPDATE", "DELETE")
# Privileges no role is ever given (the owner's).
OWNER_PRIVILEGES = ("TRUNCATE", "REFERENCES", "TRIGGER")

R: frozenset[Privilege] = frozenset({"SELECT"})
RI: frozenset[Privilege] = frozenset({"SELECT", "INSERT"})
RIU: frozenset[Privilege] = frozenset({"SELECT", "INSERT", "UPDATE"})
RID: frozenset[Privilege] = frozenset({"SELECT", "INSERT", "DELETE"})
RU: frozenset[Privilege] = frozenset({"SELECT", "UPDATE"})
W: frozenset[Privilege] = frozenset({"INSERT"})  # write only

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class DatabaseRole:
    name: str
    # The deployment variable (.env or secret store) holding its password; never a setting
    # name, since each service receives it as its own FACTORYLM_PG_PASSWORD.
    password_variable: str
    grants: typing.Mapping[str, frozenset[Privilege]]
    processes: tuple[Process, ...] = field(default=())
    # Privileges on some columns only: {table: {privilege: columns}}, e.g. the key an
    # `INSERT … ON CONFLICT (key)` must read, without the rows' other columns.
    column_grants: typing.Mapping[str, typing.Mapping[Privilege, tuple[str, ...]]] = field(
        default_factory=dict
    )
    # Compose services other than the product's processes that connect as this role.
    other_services: tuple[str, ...] = field(default=())
    # The owner's SECURITY DEFINER functions it may EXECUTE, by signature (revoked from PUBLIC
    # by their migrations): each does one bounded thing the role may not do by itself.
    functions: tuple[str, ...] = field(default=())

    @property
    def services(self) -> tuple[str, ...]:
        return (*(p.value for p in self.processes), *self.other_services)

    def __post_init__(self) -> None:
        if not _ROLE_NAME.match(self.name):
            raise ValueError(f"role name {self.name!r}")


# Every process reads the applied migrations at start (factorylm/db/migrate.py) and finds none
# pending; only the owner applies them.
_MIGRATIONS = {"schema_migrations": R}

ROLES: tuple[DatabaseRole, ...] = (
    DatabaseRole(
        "factorylm_ingest",
        "PG_INGEST_PASSWORD",
        {
            **_MIGRATIONS,
            "samples": W,  # COPY
            "collector_status": RIU,
            "ingest_writer_status": RIU,
            "alarm_outbox": RIU,  # drift alarms, saved before their workflow is started
            "ingest_spool_progress": RIU,  # how far its disk spool is backfilled
            "alarm_points": RI,  # the alarms' codes
            "alarm_journal": RI,  # raises, clears, chattering, shelves that ran out
            "alarm_shelves": RU,  # open shelves; ends those whose time ran out
            "notifications": W,  # collector alerts, deduplicated by key
            "baselines": R,  # the detector's baselines
            "forecasts": RIU,  # time-to-threshold forecasts, once a minute
        },
        (Process.INGEST,),
        column_grants={"notifications": {"SELECT": ("dedup_key",)}},
        # its backfill says which rolled-up minutes received late samples (migration 0025)
        functions=("factorylm_note_late_samples(timestamptz)",),
    ),
    DatabaseRole(
        "factorylm_edge",
        "PG_EDGE_PASSWORD",
        {
            **_MIGRATIONS,
            "plc_writes": RIU,  # its audit trail
            "approval_requests": R,  # the approval a write claims
            "notifications": W,  # incidents (a read-back mismatch)
        },
        (Process.EDGE,),
    ),
    DatabaseRole(
        "factorylm_agents",
        "PG_AGENTS_PASSWORD",
        {
            **_MIGRATIONS,
            "samples": R,
            "samples_1m": R,  # long-window queries; written by the lifecycle functions
            "data_lifecycle": R,
            "drift_events": RIU,
            "baselines": RI,
            "collector_status": R,
            "plc_writes": R,  # daily summary, health
            "work_orders": RI,
            "cmms_links": RI,
            "cmms_assets": RI,  # FactoryLM asset ids and the Atlas assets they became
            "notifications": RI,
            "outbound_messages": RIU,  # every message's delivery (activities/outbound.py)
            "approval_requests": RIU,
            "outcome_requests": RIU,
            "whatsapp_sessions": R,
            "photos": RU,
            "asset_questions": RIU,
            "manuals": RID,  # `factorylm manuals add` replaces a changed manual
            "manual_chunks": RI,
            "llm_usage": RI,
            "budget_refusals": RI,
            "monkey_runs": RIU,
            "monkey_repo_maps": RI,
            "monkey_file_chunks": RI,
            "health_incidents": RIU,
            "health_probe": RIU,
            # the health monitor's spool checks: each ingest's spool, and what it last saw
            "ingest_writer_status": R,
            "health_spool_seen": RIU,
            # the daily summary's alarm KPIs
            "alarm_journal": R,
            "alarm_shelves": R,
        },
        (Process.AGENTS,),
        # the data lifecycle (migrations 0022, 0025): rollups and the bounded drop of raw chunks
        functions=(
            "factorylm_roll_up_samples(timestamptz, interval, interval)",
            "factorylm_drop_raw_samples(interval, interval)",
        ),
    ),
    DatabaseRole(
        "factorylm_api",
        "PG_API_PASSWORD",
        {
            **_MIGRATIONS,
            "api_tokens": R,  # tokens are made and revoked by the owner (`factorylm tokens`)
            "inbound_messages": RIU,
            # Twilio's status callbacks, the SMS fallback they start, ACK replies.
            "outbound_messages": RIU,
            "whatsapp_sessions": RIU,
            # A reply that comes too late expires its request: its status only, and only to
            # 'expired' (a row-level policy, migration 0013): the API cannot record an approval.
            "approval_requests": R,
            "outcome_requests": R,
            "asset_questions": R,
            "photos": RI,
            "work_orders": R,
            "cmms_links": R,  # GET /work-orders/ATLAS-<id>: what was sent to Atlas
            "baselines": R,
            "forecasts": R,  # GET /forecasts
            "collector_status": R,
            "ingest_writer_status": R,
            "llm_usage": R,  # GET /budget
            "budget_refusals": R,
            # SHELVE / UNSHELVE replies: the code, whether the alarm stands, the shelf
            "alarm_points": R,
            "alarm_journal": RI,
            "alarm_shelves": RIU,
            # The plant board (api/board.py): trends, alarms, writes and messages, read only.
            "samples": R,
            "drift_events": R,
            "alarm_outbox": R,
            "plc_writes": R,
            "notifications": R,
        },
        (Process.API,),
        column_grants={"approval_requests": {"UPDATE": ("status",)}},
    ),
    # Grafana's datasource (grafana/provisioning): the tables its dashboards chart, read-only.
    DatabaseRole(
        "grafana_reader",
        "GRAFANA_DB_PASSWORD",
        {
            "samples": R,
            "samples_1m": R,  # long ranges
            "data_lifecycle": R,  # how far the rollups reach
            "baselines": R,
            "collector_status": R,
            "drift_events": R,
            "plc_writes": R,
            "work_orders": R,
            "llm_usage": R,
            "alarm_journal": R,  # the alarm KPI panels
            "alarm_shelves": R,
        },
        other_services=("grafana",),
        # Approvals counted by status: not their codes or the approvers' numbers.
        column_grants={"approval_requests": {"SELECT": ("status", "requested_at")}},
    ),
)

ROLE_OF: typing.Mapping[Process, DatabaseRole] = MappingProxyType(
    {p: role for role in ROLES for p in role.processes}
)

# The database owner's password: PostgreSQL itself, Temporal's databases, the migration step and
# the step that sets the roles' passwords (docker-compose.yml's `db-roles`). Nothing else.
OWNER_PASSWORD_VARIABLE = "POSTGRES_PASSWORD"
OWNER_SERVICES = ("timescaledb", "temporal", Process.MIGRATE.value, "db-roles")
# Deployment secrets that are not FactoryLM settings, and the only services that receive them.
DEPLOYMENT_SECRETS: typing.Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        OWNER_PASSWORD_VARIABLE: OWNER_SERVICES,
        "GRAFANA_ADMIN_PASSWORD": ("grafana",),
        **{role.password_variable: (*role.services, "db-roles") for role in ROLES},
    }
)
# Settings a deployment must give (the compose file refuses to start without them).
REQUIRED_SETTINGS = _fields("approvers")

# Tables no role reads or writes: the owner's alone.
OWNER_ONLY_TABLES: frozenset[str] = frozenset()


def declared_tables() -> frozenset[str]:
    return (
        frozenset(t for role in ROLES for t in (*role.grants, *role.column_grants))
        | OWNER_ONLY_TABLES
    )


async def apply_grants(conn: asyncpg.Connection) -> None:
    """Converge every role's privileges to ROLES, in one transaction, as the database owner:
    everything revoked, then exactly the declared privileges granted (and the sequences behind
    the tables a role inserts into). The roles themselves are made by migration 0013, without
    LOGIN: a deployment gives each a password (docker-compose.yml's `db-roles`)."""
    async with conn.transaction():
        tables = {
            r["relname"]
            for r in await conn.fetch(
                """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"""
            )
        }
        missing = sorted(declared_tables() - tables)
        if missing:
            raise RuntimeError(f"privileges declared for tables that do not exist: {missing}")
        undeclared = sorted(tables - declared_tables())
        if undeclared:
            raise RuntimeError(
                f"tables without a privilege decision in app/deployment.py: {undeclared}"
            )
        for role in ROLES:
            await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role.name}")
            await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role.name}")
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role.name}")
            for table, privileges in sorted(role.grants.items()):
                listed = ", ".join(p for p in TABLE_PRIVILEGES if p in privileges)
                await conn.execute(f'GRANT {listed} ON TABLE "{table}" TO {role.name}')
                if "INSERT" in privileges:
                    for seq in await _sequences_of(conn, table):
                        await conn.execute(f'GRANT USAGE ON SEQUENCE "{seq}" TO {role.name}')
            for table, by_privilege in sorted(role.column_grants.items()):
                for privilege, columns in sorted(by_privilege.items()):
                    listed = ", ".join(f'"{c}"' for c in columns)
                    await conn.execute(
                        f'GRANT {privilege} ({listed}) ON TABLE "{table}" TO {role.name}'
                    )
        # The functions: each declared one executable by exactly the roles declaring it.
        functions = sorted({f for role in ROLES for f in role.functions})
        for signature in functions:
            if await conn.fetchval("SELECT to_regprocedure($1)", signature) is None:
                raise RuntimeError(
                    f"EXECUTE declared on a function that does not exist: {signature}"
                )
            everyone = ", ".join(["PUBLIC", *(role.name for role in ROLES)])
            await conn.execute(f"REVOKE ALL ON FUNCTION {signature} FROM {everyone}")
            allowed = ", ".join(role.name for role in ROLES if signature in role.functions)
            await conn.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {allowed}")
        # Grafana's role was once made by hand with every table readable.
        if await conn.fetchval(
            """SELECT pg_has_role('grafana_reader', 'pg_read_all_data', 'MEMBER')"""
        ):
            await conn.execute("REVOKE pg_read_all_data FROM grafana_reader")


async def _sequences_of(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        """SELECT s.relname FROM pg_depend d
           JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
           JOIN pg_class t ON t.oid = d.refobjid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           WHERE d.deptype IN ('a', 'i') AND t.relname = $1 AND n.nspname = 'public'""",
        table,
    )
    return [r["relname"] for r in rows]
