"""Every API operation, fuzzed: schemathesis reads GET /openapi.json and throws generated
requests (valid and invalid, with an admin token and an approver token) at the running API
over the real stack. Whatever comes in, no answer may be a 5xx."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import Client

from api_rig import APPROVER, ApiRig, api_rig
from factorylm.api_tokens import Role
from factorylm.settings import Settings

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
async def rig(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[ApiRig]:
    # Every feature switched on, so every operation reaches its real handler.
    keys = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
    async with api_rig(
        tmp_path,
        settings,
        client,
        twilio_auth_token=SecretStr("tw-fuzz-secret"),
        trello_app_secret=SecretStr("trello-fuzz-secret"),
        payload_keys=SecretStr(keys),
    ) as rig:
        yield rig


async def test_the_openapi_description_lists_every_route(rig: ApiRig) -> None:
    async with rig.http() as http:
        spec = (await http.get("/openapi.json")).json()
    server: Any = rig.stack._api  # the running app's routes are the truth
    routes = {r.path for r in server._server.config.app.routes}
    assert routes - set(spec["paths"]) <= {"/openapi.json"}


async def test_no_generated_request_gets_a_5xx_as_admin_or_as_approver(
    rig: ApiRig, tmp_path: Path
) -> None:
    assert SCHEMATHESIS.exists(), f"{SCHEMATHESIS} missing: make setup installs the dev tools"
    # The two roles are fuzzed at once: schemathesis spends its time generating requests
    # (about 3 s of the API's time in a minute of its own), so two runs share the two cores.
    admin = await rig.token(Role.ADMIN)
    approver = await rig.token(Role.APPROVER, approver=APPROVER)
    (tmp_path / "admin").mkdir()
    (tmp_path / "approver").mkdir()
    runs = await asyncio.gather(
        _schemathesis(rig, admin, tmp_path / "admin"),
        _schemathesis(rig, approver, tmp_path / "approver"),
    )
    for role, (code, text) in zip((Role.ADMIN, Role.APPROVER), runs, strict=True):
        assert code == 0, f"as {role}:\n{text[-4000:]}"
        assert "not_a_server_error" in text or "passed" in text.lower(), text[-2000:]


async def _schemathesis(rig: ApiRig, token: str, workdir: Path) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{rig.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "25",
        "--seed",
        "20261201",
        "--request-timeout",
        "15",
        "--header",
        f"Authorization: Bearer {token}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,  # its example database stays out of the checkout
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(errors="replace")
