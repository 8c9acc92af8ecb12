"""Accounts: sign-up, sign-in, guests and their upgrade, refresh, sessions, the account.

Users are records of the built-in ``users`` collection (written through the records service
as the server itself, so every write appends its change); credentials, sessions and
one-time tokens live in Roost's own tables. Password hashing runs in a worker thread, and
an unknown email costs the same hashing time as a known one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from roost.auth import sessions
from roost.auth.passwords import MAX_PASSWORD_LENGTH, Passwords, check_password_policy
from roost.auth.principal import SYSTEM, Principal
from roost.auth.sessions import Device
from roost.auth.tokens import AccessTokens
from roost.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from roost.ids import new_id
from roost.query.parser import parse
from roost.query.sql import compile_filter
from roost.records.collections import USER_FIELDS, USERS
from roost.records.fields import check_names, now_iso
from roost.records.service import Operation, Records, delete_account, to_public
from roost.settings import Settings
from roost.storage.base import Connection, Storage, table_name
from roost.types import JSON, JSONObject

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 254
BAD_LOGIN = "the email or password is wrong"
BY_EMAIL = parse("email = @request.data.email")
ADMINS = parse('role = "admin"')


def normalise_email(email: object) -> str:
    """Trimmed and lowercased; ValidationFailed unless it looks like an address."""
    if (
        not isinstance(email, str)
        or len(email) > MAX_EMAIL_LENGTH
        or not EMAIL.match(email.strip())
    ):
        raise ValidationFailed(
            "email must be an email address", [{"field": "email", "message": "not an address"}]
        )
    return email.strip().lower()


def checked_password(password: object, field: str = "password") -> str:
    if not isinstance(password, str):
        raise ValidationFailed(
            f"{field} must be a string", [{"field": field, "message": "required"}]
        )
    problem = check_password_policy(password)
    if problem:
        raise ValidationFailed(problem, [{"field": field, "message": problem}])
    return password


@dataclass(frozen=True, slots=True)
class SignedIn:
    """What a successful sign-in returns to the client."""

    access_token: str
    expires_in: int
    refresh_token: str | None
    user: JSONObject

    def public(self) -> JSONObject:
        body: JSONObject = {
            "token_type": "Bearer",
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "user": self.user,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


class Accounts:
    def __init__(
        self, storage: Storage, records: Records, tokens: AccessTokens, settings: Settings
    ) -> None:
        self._storage = storage
        self._records = records
        self._tokens = tokens
        self._settings = settings
        self.passwords = Passwords(
            settings.password_time_cost, settings.password_memory_kib, settings.password_parallelism
        )

    # sign-in

    async def signup(
        self, email: object, password: object, device: Device, profile: object
    ) -> SignedIn:
        address = normalise_email(email)
        password_hash = await self.passwords.hash(checked_password(password))
        async with self._storage.write() as conn:
            if await self.user_by_email(conn, address) is not None:
                raise Conflict("an account with this email exists; sign in instead")
            user = await self.create_user(
                conn, {**_profile(profile), "email": address, "anonymous": False}
            )
            await store_password_hash(conn, user["id"], password_hash)
            return await self.open_session(conn, user, device)

    async def anonymous(self, device: Device) -> SignedIn:
        async with self._storage.write() as conn:
            user = await self.create_user(conn, {"anonymous": True})
            return await self.open_session(conn, user, device)

    async def login(self, email: object, password: object, device: Device) -> SignedIn:
        address = email.strip().lower() if isinstance(email, str) else ""
        given = password if isinstance(password, str) else ""
        given = given if len(given) <= MAX_PASSWORD_LENGTH else ""
        async with self._storage.read() as conn:
            user = await self.user_by_email(conn, address) if address else None
            stored = await _password_hash(conn, user["id"]) if user else None
        if not await self.passwords.verify(stored, given) or user is None:
            raise Unauthorized(BAD_LOGIN)
        rehash = (
            await self.passwords.hash(given) if self.passwords.needs_rehash(stored or "") else None
        )
        async with self._storage.write() as conn:
            if rehash is not None:
                await store_password_hash(conn, user["id"], rehash)
            return await self.open_session(conn, user, device)

    async def refresh(self, refresh_token: object) -> SignedIn:
        token = refresh_token if isinstance(refresh_token, str) else ""
        ttl = self._settings.refresh_token_ttl_seconds
        replayed: sessions.Replayed | None = None
        async with self._storage.write() as conn:
            try:
                session, next_token = await sessions.rotate(conn, token, ttl)
            except sessions.Replayed as exc:
                replayed = exc  # the session's revocation must be committed, not rolled back
            else:
                user = await self.user(conn, session["user_id"])
        if replayed is not None:
            raise replayed
        return self.signed_in(user, session["id"], next_token)

    async def upgrade(self, principal: Principal, email: object, password: object) -> SignedIn:
        """A guest becomes an email account: same id, same records."""
        user_id, session_id = _signed_in_ids(principal)
        address = normalise_email(email)
        password_hash = await self.passwords.hash(checked_password(password))
        async with self._storage.write() as conn:
            user = await self.user(conn, user_id)
            if not user.get("anonymous"):
                raise Conflict("this account already has an email and password")
            if await self.user_by_email(conn, address) is not None:
                raise Conflict("an account with this email exists; sign in instead")
            user = await self.update_user(conn, user_id, {"email": address, "anonymous": False})
            await store_password_hash(conn, user_id, password_hash)
        return self.signed_in(user, session_id, None)

    # the signed-in account

    async def me(self, principal: Principal) -> JSONObject:
        """The caller's user record, every field (through the record cache: the seed's
        ``userCache:{id}``)."""
        user_id, _ = _signed_in_ids(principal)
        try:
            return (await self._records.get(USERS, user_id, SYSTEM)).record
        except NotFound:
            raise Unauthorized("this account no longer exists") from None

    async def update_me(self, principal: Principal, patch: JSONObject) -> JSONObject:
        user_id, _ = _signed_in_ids(principal)
        async with self._storage.write() as conn:
            return await self.update_user(conn, user_id, _profile(patch))

    async def change_password(self, principal: Principal, current: object, new: object) -> None:
        """Set a new password; every other session of the account is signed out."""
        user_id, session_id = _signed_in_ids(principal)
        new_hash = await self.passwords.hash(checked_password(new, "new_password"))
        async with self._storage.read() as conn:
            stored = await _password_hash(conn, user_id)
        if not await self.passwords.verify(stored, current if isinstance(current, str) else ""):
            raise Unauthorized("the current password is wrong")
        async with self._storage.write() as conn:
            await store_password_hash(conn, user_id, new_hash)
            await sessions.revoke_all(conn, user_id, keep=session_id)
            await conn.execute(  # reset links mailed before the change stop working
                "UPDATE _one_time_tokens SET used = ? WHERE user_id = ? AND purpose = 'reset'"
                " AND used IS NULL",
                (now_iso(), user_id),
            )

    async def delete_me(self, principal: Principal) -> None:
        """Delete the account, its sessions and every record it owns, in one transaction."""
        user_id, _ = _signed_in_ids(principal)
        async with self._storage.write() as conn:
            await delete_account(self._storage, conn, user_id)

    async def logout(self, principal: Principal) -> None:
        _, session_id = _signed_in_ids(principal)
        async with self._storage.write() as conn:
            await sessions.revoke(conn, session_id)

    async def sessions(self, principal: Principal) -> list[JSONObject]:
        user_id, session_id = _signed_in_ids(principal)
        async with self._storage.read() as conn:
            rows = await sessions.live_sessions(conn, user_id)
        return [{**row, "current": row["id"] == session_id} for row in rows]

    async def revoke_session(self, principal: Principal, session_id: str) -> None:
        user_id, _ = _signed_in_ids(principal)
        async with self._storage.write() as conn:
            await sessions.revoke_one(conn, user_id, session_id)

    async def revoke_other_sessions(self, principal: Principal) -> int:
        user_id, session_id = _signed_in_ids(principal)
        async with self._storage.write() as conn:
            return await sessions.revoke_all(conn, user_id, keep=session_id)

    # admins (the CLI)

    async def create_admin(self, email: str, password: str) -> JSONObject:
        address = normalise_email(email)
        password_hash = await self.passwords.hash(checked_password(password))
        async with self._storage.write() as conn:
            if await self.user_by_email(conn, address) is not None:
                raise Conflict(f"an account with email {address!r} exists")
            user = await self.create_user(
                conn, {"email": address, "role": "admin", "verified": True}
            )
            await store_password_hash(conn, user["id"], password_hash)
        return user

    async def count_admins(self) -> int:
        where, params = compile_filter(ADMINS, self._storage.dialect, {})
        async with self._storage.read() as conn:
            row = await conn.fetch_one(
                f"SELECT count(*) AS n FROM {table_name(USERS)} WHERE {where}", params
            )
        return int(row["n"]) if row else 0

    # shared with the email and OIDC flows

    async def open_session(self, conn: Connection, user: JSONObject, device: Device) -> SignedIn:
        ttl = self._settings.refresh_token_ttl_seconds
        session_id, refresh_token = await sessions.open_session(conn, user["id"], device, ttl)
        return self.signed_in(user, session_id, refresh_token)

    def signed_in(self, user: JSONObject, session_id: str, refresh: str | None) -> SignedIn:
        token, ttl = self._tokens.issue(
            user["id"],
            session_id,
            role=user.get("role", "user"),
            verified=bool(user.get("verified")),
            anonymous=bool(user.get("anonymous")),
        )
        return SignedIn(access_token=token, expires_in=ttl, refresh_token=refresh, user=user)

    async def create_user(self, conn: Connection, data: JSONObject) -> JSONObject:
        user_id = new_id()
        operation = Operation("create", USERS, data={**data, "id": user_id, "owner": user_id})
        outcome = await self._records.apply(conn, operation, SYSTEM)
        user: JSONObject = outcome.body
        return user

    async def update_user(self, conn: Connection, user_id: str, data: JSONObject) -> JSONObject:
        outcome = await self._records.apply(conn, Operation("update", USERS, user_id, data), SYSTEM)
        user: JSONObject = outcome.body
        return user

    async def user(self, conn: Connection, user_id: str) -> JSONObject:
        row = await conn.fetch_one(
            f"SELECT id, owner, created, updated, version, data FROM {table_name(USERS)}"
            " WHERE id = ?",
            (user_id,),
        )
        if row is None:
            raise Unauthorized("this account no longer exists")
        return to_public(row)

    async def user_by_email(self, conn: Connection, address: str) -> JSONObject | None:
        context: dict[str, JSON] = {"request.data": {"email": address}}
        where, params = compile_filter(BY_EMAIL, self._storage.dialect, context)
        row = await conn.fetch_one(
            f"SELECT id, owner, created, updated, version, data FROM {table_name(USERS)}"
            f" WHERE {where}",
            params,
        )
        return to_public(row) if row else None


def _signed_in_ids(principal: Principal) -> tuple[str, str]:
    if principal.id is None or principal.session_id is None:
        raise Unauthorized("sign in first")
    return principal.id, principal.session_id


def _profile(data: Any) -> JSONObject:
    """Profile fields a user may set on their own account (never email, role or flags)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationFailed("data must be an object", [{"field": "data", "message": "object"}])
    for name in data:
        if name in USER_FIELDS:
            raise Forbidden(f"{name} cannot be set here")
    errors = check_names(data)  # written as the server: system fields would pass otherwise
    if errors:
        raise ValidationFailed(errors[0]["message"], errors)
    return data


async def _password_hash(conn: Connection, user_id: str) -> str | None:
    row = await conn.fetch_one(
        "SELECT password_hash FROM _credentials WHERE user_id = ?", (user_id,)
    )
    return str(row["password_hash"]) if row else None


async def store_password_hash(conn: Connection, user_id: str, password_hash: str) -> None:
    """Set (or replace) the user's password hash, in the caller's transaction."""
    await conn.execute(
        "INSERT INTO _credentials (user_id, password_hash, updated) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash,"
        " updated = excluded.updated",
        (user_id, password_hash, now_iso()),
    )
