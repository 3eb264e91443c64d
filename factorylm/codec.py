"""Payload encryption for Temporal: workflow histories hold phone numbers, approval codes and
the agents' summaries, and whoever can read the Temporal database or its API could read them.

Every payload is sealed with AES-256-GCM under the current key; the key id travels in the
payload's metadata, so keys rotate by putting a new key first (it encrypts) and keeping the
old ones after it (they still decrypt what was written under them). Payloads that are not
encrypted (histories from before encryption was turned on) pass through as they are.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE = 12


class PayloadKeyError(ValueError):
    """The payload keys setting is malformed, or a payload's key is not configured."""


def parse_keys(text: str) -> tuple[dict[str, bytes], str]:
    """ "id1:BASE64,id2:BASE64" → the keys by id, and the id that encrypts (the first)."""
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id:
            raise PayloadKeyError("FACTORYLM_PAYLOAD_KEYS: expected KEYID:BASE64KEY[,KEYID:…]")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise PayloadKeyError(f"FACTORYLM_PAYLOAD_KEYS: key {key_id!r} is not base64") from None
        if len(key) != 32:
            raise PayloadKeyError(
                f"FACTORYLM_PAYLOAD_KEYS: key {key_id!r} has {len(key)} bytes; AES-256 needs 32 "
                "(make one with: python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')"
            )
        if key_id in keys:
            raise PayloadKeyError(f"FACTORYLM_PAYLOAD_KEYS: key id {key_id!r} appears twice")
        keys[key_id] = key
        order.append(key_id)
    if not order:
        raise PayloadKeyError("FACTORYLM_PAYLOAD_KEYS is set but holds no key")
    return keys, order[0]


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = current

    @classmethod
    def from_setting(cls, text: str) -> EncryptionCodec:
        return cls(*parse_keys(text))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._current]
        out = []
        for payload in payloads:
            nonce = os.urandom(_NONCE)
            # The key id is authenticated too: a payload cannot be relabelled to another key.
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), self._current.encode())
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: self._current.encode()},
                    data=nonce + sealed,
                )
            )
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                out.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise PayloadKeyError(
                    f"a payload is encrypted with key {key_id!r}, which FACTORYLM_PAYLOAD_KEYS "
                    "does not hold (keep old keys after the new one when rotating)"
                )
            nonce, sealed = payload.data[:_NONCE], payload.data[_NONCE:]
            try:
                plain = cipher.decrypt(nonce, sealed, key_id.encode())
            except InvalidTag:
                raise PayloadKeyError(
                    f"a payload under key {key_id!r} does not decrypt: tampered, or the key "
                    "with that id changed"
                ) from None
            out.append(Payload.FromString(plain))
        return out


def with_codec(converter: DataConverter, codec: PayloadCodec | None) -> DataConverter:
    return converter if codec is None else dataclasses.replace(converter, payload_codec=codec)
