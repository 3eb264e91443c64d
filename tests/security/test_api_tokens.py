"""Finding 3: one bearer token could do everything, and approved as whoever the body named,
without a code. Now every client has its own token bound to a role, approvals are made as the
token's approver and need the request's code, and tokens are stored hashed."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from temporalio.client import Client

from api_rig import APPROVER, BACKUP, ApiRig, api_rig
from factorylm.api_tokens import Role
from factorylm.settings import Settings
from workflows.drift_response import DriftResponseWorkflow


@pytest.fixture
async def rig(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path, settings, client) as rig:
        yield rig


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_an_uploader_token_uploads_photos_and_nothing_else(rig: ApiRig) -> None:
    token = await rig.token(Role.UPLOADER)
    wf = await rig.waiting_workflow()
    code = await rig.pending_code(wf)
    async with rig.http(token) as http:
        upload = await http.post(
            "/photos", files={"image": ("p.png", _png(), "image/png")}, data={"asset_id": "press-1"}
        )
        assert upload.status_code == 202
        for path in ("/collectors", "/baselines", "/budget", "/work-orders/WO-000001"):
            refused = await http.get(path)
            assert refused.status_code == 403, path
            assert "needs" in refused.json()["error"]
        decide = await http.post(f"/approvals/{wf}", json={"approve": True, "code": code})
        assert decide.status_code == 403
    assert await rig.stack.client.get_workflow_handle(wf).query(
        DriftResponseWorkflow.pending_approval
    )


async def test_a_viewer_reads_but_cannot_upload_or_decide(rig: ApiRig) -> None:
    token = await rig.token(Role.VIEWER)
    wf = await rig.waiting_workflow()
    code = await rig.pending_code(wf)
    async with rig.http(token) as http:
        assert (await http.get("/collectors")).status_code == 200
        upload = await http.post("/photos", files={"image": ("p.png", _png(), "image/png")})
        assert upload.status_code == 403
        decide = await http.post(f"/approvals/{wf}", json={"approve": True, "code": code})
        assert decide.status_code == 403


async def test_an_approver_decides_only_as_itself_and_only_with_the_code(rig: ApiRig) -> None:
    wf = await rig.waiting_workflow()
    code = await rig.pending_code(wf)
    backup = await rig.token(Role.APPROVER, approver=BACKUP)
    on_duty = await rig.token(Role.APPROVER, approver=APPROVER)
    async with rig.http(backup) as http:
        # Claiming to be the on-duty approver in the body is refused outright.
        claimed = await http.post(
            f"/approvals/{wf}", json={"approve": True, "code": code, "approver": APPROVER}
        )
        assert claimed.status_code == 403 and "decides as" in claimed.json()["error"]
    async with rig.http(on_duty) as http:
        no_code = await http.post(f"/approvals/{wf}", json={"approve": True})
        assert no_code.status_code == 422 and "code" in no_code.json()["error"]
        wrong = "0000" if code != "0000" else "1111"
        bad_code = await http.post(f"/approvals/{wf}", json={"approve": True, "code": wrong})
        assert bad_code.status_code == 409 and "does not match" in bad_code.json()["error"]
        denied = await http.post(f"/approvals/{wf}", json={"approve": False, "code": code})
        assert denied.status_code == 200 and denied.json()["decision"] == "denied"
    result = await rig.stack.client.get_workflow_handle(wf).result()
    assert result["status"] == "denied" and result["value_written"] is None


async def test_an_admin_token_without_an_approver_identity_cannot_decide(rig: ApiRig) -> None:
    wf = await rig.waiting_workflow()
    code = await rig.pending_code(wf)
    token = await rig.token(Role.ADMIN)
    async with rig.http(token) as http:
        response = await http.post(f"/approvals/{wf}", json={"approve": True, "code": code})
    assert response.status_code == 403 and "not bound to an approver" in response.json()["error"]


async def test_a_revoked_token_is_refused_and_no_token_is_stored_in_the_clear(
    rig: ApiRig,
) -> None:
    token = await rig.token(Role.VIEWER)
    name = next(t.name for t in await rig.tokens.list() if t.revoked_at is None)
    assert rig.stack.pool is not None
    stored = await rig.stack.pool.fetch("SELECT * FROM api_tokens")
    assert all(token.encode() not in bytes(str(dict(r)), "utf-8") for r in stored)
    async with rig.http(token) as http:
        assert (await http.get("/collectors")).status_code == 200
        for info in await rig.tokens.list():
            await rig.tokens.revoke(info.name)
        assert name
        assert (await http.get("/collectors")).status_code == 401


@pytest.mark.parametrize(
    "header",
    [b"Bearer ", b"Bearer", b"Basic dXNlcjpwYXNz", b"Bearer flm_\xc3\xa9\xe8", b"Bearer \xff\xfe"],
)
async def test_empty_wrong_scheme_and_non_ascii_headers_are_a_401(
    rig: ApiRig, header: bytes
) -> None:
    # Raw bytes on the wire: HTTP clients refuse to send some of these, attackers do not.
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.settings.api_port)
    writer.write(b"GET /collectors HTTP/1.1\r\nHost: x\r\nAuthorization: " + header + b"\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status.startswith(b"HTTP/1.1 401"), status


def test_the_tokens_command_makes_lists_and_revokes(settings: Settings) -> None:
    env = {
        "FACTORYLM_PG_DATABASE": settings.pg_database,
        "FACTORYLM_PG_PORT": str(settings.pg_port),
        "FACTORYLM_APPROVERS": APPROVER,
        "PATH": "/usr/bin:/bin",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "tokens", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    made = cli("add", "line3-tablet", "--role", "approver", "--approver", APPROVER)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("flm_") and "shown once" in made.stderr
    stranger = cli("add", "intruder", "--role", "approver", "--approver", "whatsapp:+1999")
    assert stranger.returncode == 1 and "not in FACTORYLM_APPROVERS" in stranger.stderr
    listed = cli("list")
    assert f"line3-tablet\tapprover as {APPROVER}\tactive" in listed.stdout
    assert made.stdout.strip() not in listed.stdout
    assert cli("revoke", "line3-tablet").returncode == 0
    assert "revoked" in cli("list").stdout
    assert cli("revoke", "line3-tablet").returncode == 1
