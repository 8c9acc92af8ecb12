"""Admin accounts and admin API tokens: the small, replaceable auth of the first release.

``roost admin create EMAIL`` makes an account; ``roost admin token EMAIL`` prints a new API
token once. Only the token's SHA-256 is stored, so a leaked database leaks no token, and
a lookup by hash compares no secret byte by byte.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from roost.auth.passwords import hash_password
from roost.auth.principal import Principal
from roost.errors import Conflict, NotFound
from roost.ids import new_id
from roost.storage.base import Storage, UniqueViolation

TOKEN_PREFIX = "roost_admin_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def create_admin(storage: Storage, email: str, password: str) -> str:
    """Create an admin account; return its id."""
    admin_id = new_id()
    password_hash = await hash_password(password)
    try:
        async with storage.write() as conn:
            await conn.execute(
                "INSERT INTO _admins (id, email, password_hash, created) VALUES (?, ?, ?, ?)",
                (admin_id, email.strip().lower(), password_hash, _now()),
            )
    except UniqueViolation as exc:
        raise Conflict(f"an admin with email {email!r} already exists") from exc
    return admin_id


async def count_admins(storage: Storage) -> int:
    async with storage.read() as conn:
        row = await conn.fetch_one("SELECT count(*) AS n FROM _admins")
    return int(row["n"]) if row else 0


async def create_token(storage: Storage, email: str, name: str = "cli") -> str:
    """Issue a new API token for the admin with ``email``; the caller shows it once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with storage.write() as conn:
        admin = await conn.fetch_one(
            "SELECT id FROM _admins WHERE email = ?", (email.strip().lower(),)
        )
        if admin is None:
            raise NotFound(f"no admin with email {email!r}")
        await conn.execute(
            "INSERT INTO _admin_tokens (token_hash, admin_id, name, created) VALUES (?, ?, ?, ?)",
            (_digest(token), admin["id"], name, _now()),
        )
    return token


async def principal_for_token(storage: Storage, token: str) -> Principal | None:
    """The admin a token belongs to, or None for an unknown or malformed token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    async with storage.read() as conn:
        row = await conn.fetch_one(
            "SELECT admin_id FROM _admin_tokens WHERE token_hash = ?", (_digest(token),)
        )
    return Principal(id=row["admin_id"], role="admin", verified=True) if row else None
