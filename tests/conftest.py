"""Shared fixtures: the real PostgreSQL cluster, a real Temporal dev server, free ports.

Nothing here skips: a part that cannot start fails the run with its own error.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from app.pgcluster import Cluster
from factorylm.db.pool import create_pool, prepare_database
from factorylm.settings import Settings, load_settings
from factorylm.temporal_client import SEARCH_ATTRIBUTES
from helpers import free_port
from temporal.devserver import ensure_cli

# A test that hangs fails after a bound, with its stacks, instead of holding the run.
pytest_plugins = ["hang_guard"]

# One database per test run, so runs side by side (two checkouts, two developers) never collide.
TEST_DB = f"factorylm_test_{os.getpid()}"


HISTORIES = Path(__file__).parent / "histories"


@pytest.fixture
def record_history() -> Callable[[WorkflowHandle[Any, Any], str], Awaitable[None]]:
    """Saves a finished workflow's history for the replay tests when
    FACTORYLM_RECORD_HISTORIES=1 (re-record after an intended, compatible workflow change)."""

    async def record(handle: WorkflowHandle[Any, Any], name: str) -> None:
        if os.environ.get("FACTORYLM_RECORD_HISTORIES") != "1":
            return
        history = await handle.fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        # The id travels with the events: replay must run under the id the history was made with.
        recorded = {"workflow_id": history.workflow_id, "history": json.loads(history.to_json())}
        (HISTORIES / f"{name}.json").write_text(json.dumps(recorded, indent=1) + "\n")

    return record


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(
        pg_database=TEST_DB,
        api_port=free_port(),
        temporal_ui_port=free_port(),
        approval_timeout_s=60.0,
        # The tests' bootstrap admin token and approver (the product ships neither).
        api_token=SecretStr(f"test-bootstrap-{secrets.token_urlsafe(24)}"),
        approvers=["whatsapp:+15550100001"],
        # A spool directory is locked by one ingest; tests run many side by side, so the
        # store-and-forward tests give each ingest its own (tests/integration/test_spool.py).
        spool_enabled=False,
    )


@pytest.fixture(scope="session")
def postgres(base_settings: Settings) -> Iterator[None]:
    """The project's cluster (started if needed) with a fresh, migrated test database."""
    Cluster.from_settings(base_settings).start()

    async def drop() -> None:
        conn = await asyncpg.connect(base_settings.dsn_for("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())
    asyncio.run(prepare_database(base_settings))
    yield
    asyncio.run(drop())


@pytest.fixture(scope="session")
async def temporal_env(base_settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        namespace=base_settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(ensure_cli(base_settings)),
        search_attributes=SEARCH_ATTRIBUTES,
        ui=True,
        ui_port=base_settings.temporal_ui_port,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
        ],
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def settings(
    base_settings: Settings, temporal_env: WorkflowEnvironment, postgres: None
) -> Settings:
    target = temporal_env.client.service_client.config.target_host
    return base_settings.model_copy(update={"temporal_address": target})


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings, max_size=5)
    yield pool
    await pool.close()
