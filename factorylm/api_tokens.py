"""Per-client API tokens, each bound to a role: what a client may do is decided by its token,
never by what its request body claims.

Roles: `uploader` (photos only), `viewer` (reads), `approver` (reads, and decisions as the one
approver identity the token is bound to), `admin` (reads and uploads; approving still needs an
approver identity). Tokens are random 256-bit strings shown once; only their SHA-256 is stored,
so a copy of the database does not hand out working tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg

TOKEN_PREFIX = "flm_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Role(StrEnum):
    UPLOADER = "uploader"
    VIEWER = "viewer"
    APPROVER = "approver"
    ADMIN = "admin"


class TokenError(ValueError):
    """A token cannot be made or changed as asked; the message says why."""


@dataclass(frozen=True)
class ApiClient:
    """Who a request comes from, as its token says."""

    name: str
    role: Role
    approver: str | None = None


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: Role
    approver: str | None
    created_at: datetime
    revoked_at: datetime | None


def token_hash(token: str | bytes) -> bytes:
    raw = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token
    return hashlib.sha256(raw).digest()


class TokenStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(
        self, name: str, role: Role, *, approver: str | None = None, approvers: list[str]
    ) -> str:
        """Makes a token and returns it (the only time it is seen)."""
        if not _NAME.match(name):
            raise TokenError(f"token name {name!r}: use letters, digits, . _ - (at most 64)")
        if role is Role.APPROVER and not approver:
            raise TokenError("an approver token needs --approver (e.g. whatsapp:+15551230001)")
        if approver is not None and approver not in approvers:
            raise TokenError(
                f"{approver} is not in FACTORYLM_APPROVERS; add them there first "
                f"(configured: {', '.join(approvers) or 'none'})"
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            await self._pool.execute(
                "INSERT INTO api_tokens (name, role, approver, token_hash) VALUES ($1, $2, $3, $4)",
                name,
                role.value,
                approver,
                token_hash(token),
            )
        except asyncpg.UniqueViolationError:
            raise TokenError(
                f"a token named {name!r} exists; revoke it or pick another name"
            ) from None
        return token

    async def revoke(self, name: str) -> bool:
        result: str = await self._pool.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name
        )
        return result.endswith(" 1")

    async def list(self) -> list[TokenInfo]:
        rows = await self._pool.fetch(
            "SELECT name, role, approver, created_at, revoked_at FROM api_tokens ORDER BY name"
        )
        return [
            TokenInfo(r["name"], Role(r["role"]), r["approver"], r["created_at"], r["revoked_at"])
            for r in rows
        ]

    async def client_for(self, token: bytes) -> ApiClient | None:
        """The client a presented token belongs to, or None (unknown or revoked)."""
        if not token.startswith(TOKEN_PREFIX.encode()):
            return None
        row = await self._pool.fetchrow(
            "SELECT name, role, approver FROM api_tokens "
            "WHERE token_hash = $1 AND revoked_at IS NULL",
            token_hash(token),
        )
        if row is None:
            return None
        return ApiClient(row["name"], Role(row["role"]), row["approver"])
