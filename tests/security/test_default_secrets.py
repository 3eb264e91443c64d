"""Finding 4: the API started with a default token, an empty token let `Bearer ` through, and
secrets showed in printed settings. Now a listener beyond loopback refuses default or short
secrets, naming the setting; secrets are SecretStr; the product ships no approver."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import Client

from app.stack import Stack
from factorylm.settings import Settings, SettingsError, load_settings, unsafe_listener
from helpers import free_port, plant_with_free_ports


@pytest.mark.parametrize("token", ["dev-token-change-me", "short-but-set"])
async def test_an_api_beyond_loopback_with_a_default_or_short_token_does_not_start(
    tmp_path: Path, settings: Settings, client: Client, token: str
) -> None:
    plant, _ = plant_with_free_ports(tmp_path)
    port = free_port()
    s = settings.model_copy(
        update={"api_host": "0.0.0.0", "api_port": port, "api_token": SecretStr(token)}
    )
    stack = Stack(
        s, plant, client, run_ingest=False, run_agents_worker=False, run_edge_worker=False
    )
    with pytest.raises(SettingsError, match="FACTORYLM_API_TOKEN"):
        await stack.start()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "nothing may listen"


def test_loopback_may_use_any_token_and_a_long_random_one_may_listen_anywhere() -> None:
    base = load_settings(api_token="x")
    assert unsafe_listener(base) is None  # 127.0.0.1 by default
    wide = base.model_copy(update={"api_host": "0.0.0.0"})
    assert unsafe_listener(wide) is not None
    strong = wide.model_copy(update={"api_token": SecretStr("k" * 10 + "Zq8r2LmVx0pT4wYs9")})
    assert unsafe_listener(strong) is None
    # No bootstrap token at all: only per-client tokens authenticate, which is safe anywhere.
    assert unsafe_listener(wide.model_copy(update={"api_token": None})) is None


def test_a_default_webhook_secret_is_refused_beyond_loopback() -> None:
    wide = load_settings(api_host="0.0.0.0", trello_app_secret="changeme")
    problem = unsafe_listener(wide)
    assert problem is not None and "FACTORYLM_TRELLO_APP_SECRET" in problem


def test_secrets_are_secret_and_empty_ones_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORYLM_API_TOKEN", "api-secret-789")
    monkeypatch.setenv("FACTORYLM_PG_PASSWORD", "pg-secret-012")
    s = load_settings()
    shown = repr(s) + str(s.model_dump()) + s.model_dump_json()
    assert "api-secret-789" not in shown and "pg-secret-012" not in shown
    assert "pg-secret-012" in s.pg_dsn  # the driver still gets it
    monkeypatch.setenv("FACTORYLM_API_TOKEN", "")
    assert load_settings().api_token is None


def test_the_product_ships_no_approver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACTORYLM_APPROVERS", raising=False)
    assert load_settings().approvers == []
