"""Finding 2: workflow histories held phone numbers, approval codes and the agents' summaries
in the clear. With FACTORYLM_PAYLOAD_KEYS set every payload is AES-GCM sealed under a key
whose id travels with it (so keys rotate), and the Web UI decodes only through the API's
codec endpoint, for a viewer token."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api_rig import ApiRig, api_rig
from factorylm.api_tokens import Role
from factorylm.codec import ENCODING, EncryptionCodec, PayloadKeyError, parse_keys
from factorylm.settings import Settings
from factorylm.temporal_client import connect

PHONE = "whatsapp:+15550123456"


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@workflow.defn(sandboxed=False)
class CarryWorkflow:
    """Stands for any workflow: its input and result carry what a drift response carries."""

    @workflow.run
    async def run(self, text: str) -> str:
        return f"asked {text}"


@pytest.fixture
async def keyed(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[ApiRig]:
    keys = f"k2:{_key()},k1:{_key()}"
    target = client.service_client.config.target_host
    s = settings.model_copy(update={"payload_keys": SecretStr(keys), "temporal_address": target})
    async with api_rig(tmp_path, s, client) as rig:
        yield rig


async def test_histories_hold_only_ciphertext_and_the_key_id(keyed: ApiRig, client: Client) -> None:
    sealed = await connect(keyed.settings)
    queue = f"codec-{uuid.uuid4().hex[:8]}"
    wf_id = f"codec-{uuid.uuid4().hex}"
    async with Worker(
        sealed,
        task_queue=queue,
        workflows=[CarryWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        result = await sealed.execute_workflow(
            CarryWorkflow.run, f"{PHONE} code 4821", id=wf_id, task_queue=queue
        )
    assert result == f"asked {PHONE} code 4821"  # the encrypting client reads it back
    # The plain client (as anyone with Temporal access would) sees no number and no code.
    history = await client.get_workflow_handle(wf_id).fetch_history()
    raw = history.to_json()
    assert PHONE not in raw and "4821" not in raw
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == ENCODING
    assert started.metadata["encryption-key-id"] == b"k2"  # the first key encrypts


async def test_an_old_key_still_decrypts_after_rotation_and_an_unknown_one_is_named() -> None:
    old_key, new_key = _key(), _key()
    old = EncryptionCodec(*parse_keys(f"k1:{old_key}"))
    rotated = EncryptionCodec(*parse_keys(f"k2:{new_key},k1:{old_key}"))
    from temporalio.api.common.v1 import Payload

    written = await old.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"secret"')])
    assert (await rotated.decode(written))[0].data == b'"secret"'
    stranger = EncryptionCodec(*parse_keys(f"k3:{_key()}"))
    with pytest.raises(PayloadKeyError, match="'k1'"):
        await stranger.decode(written)
    # A key id relabelled on the payload fails authentication instead of decrypting.
    forged = await old.encode([Payload(data=b"x")])
    forged[0].metadata["encryption-key-id"] = b"k2"
    same_bytes = EncryptionCodec(*parse_keys(f"k2:{old_key}"))
    with pytest.raises(PayloadKeyError, match="does not decrypt"):
        await same_bytes.decode(forged)


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("k1", "KEYID:BASE64KEY"),
        ("k1:@@@", "not base64"),
        (f"k1:{base64.b64encode(b'x' * 16).decode()}", "32"),
    ],
)
def test_malformed_keys_are_named(setting: str, said: str) -> None:
    with pytest.raises(PayloadKeyError, match=said):
        parse_keys(setting)


async def test_the_codec_endpoint_decodes_for_a_viewer_only(keyed: ApiRig) -> None:
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payload, Payloads

    codec = EncryptionCodec.from_setting(keyed.settings.payload_keys.get_secret_value())  # type: ignore[union-attr]
    sealed = await codec.encode(
        [Payload(metadata={"encoding": b"json/plain"}, data=PHONE.encode())]
    )
    body = json_format.MessageToDict(Payloads(payloads=sealed))
    async with keyed.http() as anonymous:
        assert (await anonymous.post("/codec/decode", json=body)).status_code == 401
    uploader = await keyed.token(Role.UPLOADER)
    async with keyed.http(uploader) as http:
        assert (await http.post("/codec/decode", json=body)).status_code == 403
    viewer = await keyed.token(Role.VIEWER)
    async with keyed.http(viewer) as http:
        decoded = await http.post("/codec/decode", json=body)
        assert decoded.status_code == 200
        payload = json_format.ParseDict(decoded.json(), Payloads()).payloads[0]
        assert payload.data == PHONE.encode()
        garbage = await http.post("/codec/decode", json={"payloads": "nope"})
        assert garbage.status_code == 400
        preflight = await http.options(
            "/codec/decode",
            headers={
                "Origin": keyed.settings.temporal_ui_url,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == keyed.settings.temporal_ui_url
        other = await http.options(
            "/codec/decode",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers
