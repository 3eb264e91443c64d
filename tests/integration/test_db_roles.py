"""The processes' PostgreSQL roles (migration 0013, privileges from app/deployment.py) in the
real database: each role holds exactly its declared privileges, cannot do what another process
does, and can do what its own process does, connecting as a real login of that role."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from app.deployment import (
    OWNER_PRIVILEGES,
    ROLE_OF,
    ROLES,
    TABLE_PRIVILEGES,
    DatabaseRole,
    Process,
    apply_grants,
    declared_tables,
)
from factorylm.api_tokens import Role, TokenStore, token_hash
from factorylm.db.migrate import migrate
from factorylm.db.pool import prepare_database
from factorylm.settings import Settings
from ingest.writer import BatchWriter

Denied = asyncpg.InsufficientPrivilegeError
ROLE = {role.name: role for role in ROLES}


@pytest.fixture(scope="module")
def owner(base_settings: Settings, postgres: None) -> Settings:
    """The test database's owner (no Temporal needed here)."""
    return base_settings


@pytest.fixture(scope="module")
async def granted(owner: Settings) -> AsyncIterator[dict[str, Settings]]:
    """The test database with the roles' privileges applied as `factorylm db migrate` does, and
    for each role a login that is a member of it (the embedded cluster trusts loopback, so no
    password): settings that connect as that role."""
    logins = {role.name: f"flm_t{os.getpid()}_{role.name}" for role in ROLES}
    conn = await asyncpg.connect(owner.pg_dsn)
    try:
        await apply_grants(conn)
        for role, login in logins.items():
            await conn.execute(f"DROP ROLE IF EXISTS {login}")
            await conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE {role}")
        yield {
            role: owner.model_copy(update={"pg_user": login, "pg_password": None})
            for role, login in logins.items()
        }
    finally:
        for login in logins.values():
            await conn.execute(f"DROP ROLE IF EXISTS {login}")
        await conn.close()


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _owner(settings: Settings, sql: str, *args: object) -> object:
    async with connected(settings) as conn:
        return await conn.fetchval(sql, *args)


_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"


async def test_every_table_has_a_privilege_decision(
    granted: dict[str, Settings], owner: Settings
) -> None:
    async with connected(owner) as conn:
        tables = {r["tablename"] for r in await conn.fetch(_TABLES)}
    assert tables == set(declared_tables())


async def test_each_role_holds_exactly_its_declared_privileges(
    granted: dict[str, Settings], owner: Settings
) -> None:
    wrong = []
    async with connected(owner) as conn:
        tables = [r["tablename"] for r in await conn.fetch(_TABLES)]
        for role in ROLES:
            for table in tables:
                for privilege in (*TABLE_PRIVILEGES, *OWNER_PRIVILEGES):
                    held = await conn.fetchval(
                        "SELECT has_table_privilege($1, $2, $3)",
                        role.name,
                        f"public.{table}",
                        privilege,
                    )
                    if held != (privilege in role.grants.get(table, frozenset())):
                        wrong.append((role.name, table, privilege, held))
    assert not wrong


async def test_column_grants_reach_their_columns_only(
    granted: dict[str, Settings], owner: Settings
) -> None:
    async with connected(owner) as conn:
        for role in ROLES:
            for table, by_privilege in role.column_grants.items():
                columns = [
                    r["attname"]
                    for r in await conn.fetch(
                        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
                        "AND attnum > 0 AND NOT attisdropped",
                        table,
                    )
                ]
                for privilege, granted_columns in by_privilege.items():
                    for column in columns:
                        held = await conn.fetchval(
                            "SELECT has_column_privilege($1, $2, $3, $4)",
                            role.name,
                            table,
                            column,
                            privilege,
                        )
                        assert held == (column in granted_columns), (role.name, table, column)


async def test_roles_are_not_privileged_and_cannot_create_objects(
    granted: dict[str, Settings], owner: Settings
) -> None:
    async with connected(owner) as conn:
        for role in ROLES:
            row = await conn.fetchrow(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication "
                "FROM pg_roles WHERE rolname = $1",
                role.name,
            )
            assert row is not None and not any(row.values()), role.name
            assert not await conn.fetchval(
                "SELECT has_schema_privilege($1, 'public', 'CREATE')", role.name
            ), role.name


async def test_a_process_role_starts_when_the_owner_has_migrated(
    granted: dict[str, Settings],
) -> None:
    # What every process does at start (Stack.start): ensure the database, find nothing pending.
    for role in (r for r in ROLES if r.processes):
        await prepare_database(granted[role.name])
        async with connected(granted[role.name]) as conn:
            assert await migrate(conn) == []


async def test_a_process_role_cannot_apply_migrations(granted: dict[str, Settings]) -> None:
    async with connected(granted[ROLE_OF[Process.API].name]) as conn:
        with pytest.raises(Denied):
            await conn.execute("CREATE TABLE sneaky (id int)")
        with pytest.raises(Denied):
            await conn.execute("DELETE FROM schema_migrations")


async def _denied(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    with pytest.raises(Denied):
        await conn.execute(sql, *args)


async def test_the_ingest_role_cannot_read_plc_writes_nor_touch_approvals(
    granted: dict[str, Settings],
) -> None:
    async with connected(granted[ROLE_OF[Process.INGEST].name]) as conn:
        await _denied(conn, "SELECT * FROM plc_writes")
        await _denied(conn, "UPDATE approval_requests SET status = 'approved'")
        await _denied(conn, "SELECT code FROM approval_requests")
        await _denied(conn, "SELECT * FROM samples")  # it writes samples, never reads them
        await _denied(conn, "SELECT token_hash FROM api_tokens")
        await _denied(conn, "SELECT body FROM notifications")  # approval texts are not its


async def test_the_edge_role_cannot_insert_samples_nor_answer_an_approval(
    granted: dict[str, Settings],
) -> None:
    async with connected(granted[ROLE_OF[Process.EDGE].name]) as conn:
        await _denied(conn, "INSERT INTO samples VALUES (now(), 'conveyor-1', 'vibration', 1.0)")
        await _denied(conn, "UPDATE approval_requests SET status = 'approved'")
        await _denied(
            conn,
            "INSERT INTO approval_requests (workflow_id, code, recipient, action) "
            "VALUES ('drift-x', '1234', 'whatsapp:+15550100001', 'shutdown_motor')",
        )
        await _denied(conn, "DELETE FROM plc_writes")  # the audit trail is append and update only
        await _denied(conn, "SELECT * FROM api_tokens")


async def test_the_api_role_cannot_mint_a_token_nor_write_the_plc_audit(
    granted: dict[str, Settings],
) -> None:
    api = granted[ROLE_OF[Process.API].name]
    pool = await asyncpg.create_pool(api.pg_dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        with pytest.raises(Denied):  # the product's own code path, as `factorylm tokens add`
            await TokenStore(pool).add("intruder", Role.ADMIN, approvers=[])
        async with pool.acquire() as conn:
            await _denied(
                conn,
                "INSERT INTO plc_writes (action_id, workflow_id, action, plc_id, target, "
                "value_written, status) VALUES ('a', 'w', 'x', 'p', 't', 0, 'verified')",
            )
            await _denied(conn, "INSERT INTO samples VALUES (now(), 'p', 'm', 1.0)")
            await _denied(conn, "UPDATE api_tokens SET revoked_at = NULL")
    finally:
        await pool.close()


async def test_the_api_role_cannot_record_an_approval(
    granted: dict[str, Settings], owner: Settings
) -> None:
    workflow_id = f"drift-{secrets.token_hex(4)}"
    async with connected(owner) as conn:
        request_id = await conn.fetchval(
            "INSERT INTO approval_requests (workflow_id, code, recipient, action) "
            "VALUES ($1, '1234', 'whatsapp:+15550100001', 'shutdown_motor') RETURNING id",
            workflow_id,
        )
    async with connected(granted[ROLE_OF[Process.API].name]) as conn:
        # The record the edge worker checks before an approved write: the API cannot make it.
        await _denied(
            conn, "UPDATE approval_requests SET status = 'approved' WHERE id = $1", request_id
        )
        await _denied(
            conn,
            "UPDATE approval_requests SET answered_by = 'whatsapp:+1', answered_at = now() "
            "WHERE id = $1",
            request_id,
        )
        await _denied(
            conn,
            "INSERT INTO approval_requests (workflow_id, code, recipient, action, status, "
            "answered_by, answered_at) VALUES ($1, '9999', 'whatsapp:+15550100001', "
            "'shutdown_motor', 'approved', 'whatsapp:+15550100001', now())",
            workflow_id,
        )
    async with connected(owner) as conn:
        row = await conn.fetchrow(
            "SELECT status, answered_by FROM approval_requests WHERE id = $1", request_id
        )
    assert row is not None and (row["status"], row["answered_by"]) == ("pending", None)


async def test_the_api_role_cannot_reopen_an_answered_request(
    granted: dict[str, Settings], owner: Settings
) -> None:
    request_id = await _approved_request(owner, f"drift-{secrets.token_hex(4)}")
    async with connected(granted[ROLE_OF[Process.API].name]) as conn:
        # Row-level rules: only a pending request, only to 'expired'.
        reopened = await conn.execute(
            "UPDATE approval_requests SET status = 'expired' WHERE id = $1", request_id
        )
        assert reopened == "UPDATE 0"


async def test_grafana_reads_its_dashboards_tables_only(granted: dict[str, Settings]) -> None:
    async with connected(granted["grafana_reader"]) as conn:
        await conn.fetch("SELECT * FROM samples LIMIT 1")
        await conn.fetch("SELECT * FROM collector_status LIMIT 1")
        await _denied(conn, "SELECT * FROM api_tokens")
        await _denied(conn, "SELECT * FROM inbound_messages")
        # The dashboard counts approvals by status; codes and approvers' numbers stay hidden.
        await conn.fetch("SELECT status, count(*) FROM approval_requests GROUP BY 1")
        await _denied(conn, "SELECT code FROM approval_requests")
        await _denied(conn, "SELECT recipient, answered_by FROM approval_requests")
        await _denied(conn, "INSERT INTO work_orders (external_key, title) VALUES ('k', 't')")


async def test_the_ingest_role_writes_samples_into_a_new_chunk_its_status_and_alarm_outbox(
    granted: dict[str, Settings], owner: Settings
) -> None:
    ingest = granted[ROLE_OF[Process.INGEST].name]
    plc = f"roles-{secrets.token_hex(4)}"
    # A day no sample has touched: TimescaleDB makes the chunk on the role's insert.
    when = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(days=secrets.randbelow(3000))
    writer = BatchWriter(ingest.pg_dsn, max_rows=10, max_delay_s=0.05)
    writer.start()
    writer.add((when + timedelta(seconds=i), plc, "vibration", float(i)) for i in range(25))
    await writer.stop(timeout_s=10)
    assert (writer.written, writer.last_error) == (25, None)
    assert await _owner(owner, "SELECT count(*) FROM samples WHERE plc_id = $1", plc) == 25
    async with connected(ingest) as conn:
        await conn.execute(
            """INSERT INTO collector_status (plc_id, vendor, protocol, state, poll_interval_ms)
               VALUES ($1, 'v', 'modbus_tcp', 'ok', 100)
               ON CONFLICT (plc_id) DO UPDATE SET state = EXCLUDED.state
               WHERE collector_status.updated_at <= EXCLUDED.updated_at""",
            plc,
        )
        await conn.execute(
            """INSERT INTO ingest_writer_status (host, samples_written) VALUES ($1, 25)
               ON CONFLICT (host) DO UPDATE SET samples_written = EXCLUDED.samples_written""",
            plc,
        )
        await conn.execute(
            """INSERT INTO notifications (dedup_key, channel, recipient, body)
               VALUES ($1, 'log', 'on-duty', 'alert') ON CONFLICT (dedup_key) DO NOTHING""",
            f"collector-{plc}",
        )
        await conn.fetch("SELECT * FROM baselines LIMIT 1")
        # The alarm outbox (ingest/outbox.py): save, scan, mark attempted and delivered, and
        # the counters on the status row.
        outbox_id = await conn.fetchval(
            """INSERT INTO alarm_outbox (workflow_id, detected_at, alert) VALUES ($1, now(), '{}')
               ON CONFLICT (workflow_id, detected_at) DO NOTHING RETURNING id""",
            f"drift-{plc}-vibration",
        )
        await conn.fetch("SELECT id, alert FROM alarm_outbox WHERE delivered_at IS NULL")
        await conn.execute(
            "UPDATE alarm_outbox SET attempts = attempts + 1, delivered_at = now() WHERE id = $1",
            outbox_id,
        )
        await conn.execute(
            """INSERT INTO ingest_writer_status (host, alarms_pending) VALUES ($1, 0)
               ON CONFLICT (host) DO UPDATE SET alarms_pending = EXCLUDED.alarms_pending""",
            plc,
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM alarm_outbox WHERE id = $1", outbox_id)


async def _approved_request(owner: Settings, workflow_id: str) -> int:
    """An approval as the agents worker records it (the workflow's decision)."""
    async with connected(owner) as conn:
        request_id = await conn.fetchval(
            "INSERT INTO approval_requests (workflow_id, code, recipient, action, status, "
            "answered_by, answered_at) VALUES ($1, '1234', 'whatsapp:+15550100001', "
            "'shutdown_motor', 'approved', 'whatsapp:+15550100001', now()) RETURNING id",
            workflow_id,
        )
    assert isinstance(request_id, int)
    return request_id


async def test_the_edge_role_audits_a_write_and_reads_the_approval_it_claims(
    granted: dict[str, Settings], owner: Settings
) -> None:
    action_id = f"roles-{secrets.token_hex(4)}"
    await _approved_request(owner, f"drift-{action_id}")
    async with connected(granted[ROLE_OF[Process.EDGE].name]) as conn:
        await conn.execute(
            """INSERT INTO plc_writes (action_id, workflow_id, action, plc_id, target,
                   approved_by, value_before, value_written, status)
               VALUES ($1, 'drift-x', 'shutdown_motor', 'conveyor-1', 'run', NULL, 1, 0,
                       'pending')""",
            action_id,
        )
        await conn.fetchrow(
            "UPDATE plc_writes SET value_read_back = 0, status = 'verified', completed_at = now() "
            "WHERE action_id = $1 RETURNING *",
            action_id,
        )
        approvals = await conn.fetch(
            "SELECT answered_by, answered_at FROM approval_requests "
            "WHERE workflow_id = $1 AND status = 'approved'",
            f"drift-{action_id}",
        )
        assert [r["answered_by"] for r in approvals] == ["whatsapp:+15550100001"]
        await conn.execute(
            """INSERT INTO notifications (dedup_key, channel, recipient, body, workflow_id)
               VALUES ($1, 'log', 'incident', 'mismatch', 'drift-x') ON CONFLICT DO NOTHING""",
            f"mismatch-{action_id}",
        )


async def test_the_api_role_records_replies_photos_and_reads_tokens(
    granted: dict[str, Settings], owner: Settings
) -> None:
    api = granted[ROLE_OF[Process.API].name]
    sid = f"SM{secrets.token_hex(8)}"
    async with connected(owner) as conn:  # a request the agents worker sent
        request_id = await conn.fetchval(
            "INSERT INTO approval_requests (workflow_id, code, recipient, action) "
            "VALUES ($1, '1234', 'whatsapp:+15550100001', 'shutdown_motor') RETURNING id",
            f"drift-{sid}",
        )
    pool = await asyncpg.create_pool(api.pg_dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        assert await TokenStore(pool).client_for(token_hash(b"not-a-token")) is None
        async with pool.acquire() as conn:
            await conn.fetchval(
                "INSERT INTO inbound_messages (message_sid, sender) VALUES ($1, 'whatsapp:+1') "
                "ON CONFLICT (message_sid) DO NOTHING RETURNING message_sid",
                sid,
            )
            await conn.execute(
                "UPDATE inbound_messages SET answer = 'ok' WHERE message_sid = $1", sid
            )
            await conn.execute(
                "INSERT INTO whatsapp_sessions (number, last_inbound_at) VALUES ($1, now()) "
                "ON CONFLICT (number) DO UPDATE SET last_inbound_at = now()",
                f"whatsapp:{sid}",
            )
            expired = await conn.execute(
                "UPDATE approval_requests SET status = 'expired' WHERE id = $1 AND status = 'pending'",
                request_id,
            )
            assert expired == "UPDATE 1"
            await conn.execute(
                """INSERT INTO photos (id, workflow_id, source, storage, location, content_type,
                       size_bytes, sha256, width, height)
                   VALUES ($1, 'photo-x', 'upload', 'filesystem', '/x', 'image/jpeg', 1, 'h', 1, 1)
                   ON CONFLICT (id) DO NOTHING""",
                sid,
            )
            for table in (
                "work_orders",
                "baselines",
                "collector_status",
                "llm_usage",
                "budget_refusals",
            ):
                await conn.fetch(f"SELECT * FROM {table} LIMIT 1")
    finally:
        await pool.close()


async def test_the_agents_role_does_its_activities_writes(granted: dict[str, Settings]) -> None:
    key = f"roles-{secrets.token_hex(4)}"
    async with connected(granted[ROLE_OF[Process.AGENTS].name]) as conn:
        await conn.fetch("SELECT * FROM samples LIMIT 1")
        event = await conn.fetchval(
            """INSERT INTO drift_events (workflow_id, plc_id, vendor, metric, magnitude_sigma,
                   window_mean, baseline_mean, baseline_std, detected_at, text)
               VALUES ($1, 'p', 'v', 'm', 6, 1, 0, 1, now(), 't') RETURNING id""",
            key,
        )
        await conn.execute("UPDATE drift_events SET resolved = true WHERE id = $1", event)
        await conn.execute(
            """INSERT INTO baselines (run_key, plc_id, metric, mean, std, p95, p99, sample_count,
                   window_start, window_end) VALUES ($1, 'p', 'm', 0, 1, 2, 3, 100, now(), now())""",
            key,
        )
        await conn.execute(
            "INSERT INTO approval_requests (workflow_id, code, recipient, action) "
            "VALUES ($1, '1234', 'whatsapp:+15550100001', 'shutdown_motor')",
            key,
        )
        answered = await conn.execute(
            "UPDATE approval_requests SET status = 'approved', answered_by = recipient, "
            "answered_at = now() WHERE workflow_id = $1 AND status = 'pending'",
            key,
        )
        assert answered == "UPDATE 1"
        await conn.execute(
            "INSERT INTO work_orders (external_key, title) VALUES ($1, 't') "
            "ON CONFLICT (external_key) DO NOTHING",
            key,
        )
        await conn.execute(
            "INSERT INTO llm_usage (agent, provider, model, ok) VALUES ('triage', 'offline', 'rules', true)"
        )
        await conn.execute(
            "INSERT INTO health_probe (id, written_at) VALUES (1, now()) "
            "ON CONFLICT (id) DO UPDATE SET written_at = now()"
        )
        manual = await conn.fetchval(
            "INSERT INTO manuals (source, title, media_type, sha256, pages, chunk_count) "
            "VALUES ($1, 't', 'text', 'h', 1, 1) RETURNING id",
            key,
        )
        await conn.execute(
            "INSERT INTO manual_chunks (manual_id, chunk_index, text, embedding) "
            "VALUES ($1, 0, 't', $2::text::vector)",
            manual,
            str([0.0] * 383 + [1.0]),
        )
        await conn.execute("DELETE FROM manuals WHERE source = $1", key)  # a changed manual
        await _denied(conn, "INSERT INTO samples VALUES (now(), 'p', 'm', 1.0)")
        await _denied(conn, "UPDATE plc_writes SET status = 'verified'")


def test_each_process_has_its_own_role() -> None:
    names = [role.name for role in ROLES]
    assert len(set(names)) == len(names)
    assert set(ROLE_OF) == {Process.INGEST, Process.EDGE, Process.AGENTS, Process.API}
    assert all(isinstance(r, DatabaseRole) for r in ROLE.values())


def _migrate_cli(owner: Settings, database: str) -> subprocess.CompletedProcess[str]:
    """`factorylm db migrate` as the compose file's `migrate` one-shot runs it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FACTORYLM_")} | {
        "FACTORYLM_PG_HOST": owner.pg_host,
        "FACTORYLM_PG_PORT": str(owner.pg_port),
        "FACTORYLM_PG_USER": owner.pg_user,
        "FACTORYLM_PG_DATABASE": database,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "db", "migrate"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


@pytest.fixture
async def scratch_database(owner: Settings) -> AsyncIterator[str]:
    name = f"flm_migrate_{os.getpid()}_{secrets.token_hex(3)}"
    yield name
    conn = await asyncpg.connect(owner.dsn_for("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_the_migrate_command_makes_a_database_and_applies_the_privileges(
    owner: Settings, scratch_database: str
) -> None:
    result = await asyncio.to_thread(_migrate_cli, owner, scratch_database)
    assert result.returncode == 0, result.stderr
    scratch = owner.model_copy(update={"pg_database": scratch_database})
    async with connected(scratch) as conn:
        assert await conn.fetchval(
            "SELECT has_table_privilege('factorylm_ingest', 'public.samples', 'INSERT')"
        )
        assert not await conn.fetchval(
            "SELECT has_table_privilege('factorylm_ingest', 'public.plc_writes', 'SELECT')"
        )


async def test_the_migrate_command_refuses_a_table_nobody_decided_on(
    owner: Settings, scratch_database: str
) -> None:
    assert (await asyncio.to_thread(_migrate_cli, owner, scratch_database)).returncode == 0
    scratch = owner.model_copy(update={"pg_database": scratch_database})
    async with connected(scratch) as conn:
        await conn.execute("CREATE TABLE undecided (id int)")
    result = await asyncio.to_thread(_migrate_cli, owner, scratch_database)
    assert result.returncode == 1
    assert "undecided" in result.stderr and "app/deployment.py" in result.stderr
