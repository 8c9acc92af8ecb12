"""Password reset and email verification by single-use, expiring tokens sent by mail.

Tokens are 256-bit random values stored only as hashes, bound to the user and to the email
address they were sent to, and used at most once. Mails are queued in the outbox inside the
same transaction that makes the token, so a mail server outage delays them but loses none.
Asking for a reset never tells whether the address has an account.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from roost.auth import sessions
from roost.auth.principal import Principal
from roost.auth.service import Accounts, checked_password, store_password_hash
from roost.auth.tokens import digest, new_secret
from roost.errors import BadRequest, Conflict, Unauthorized
from roost.mail.base import Mail
from roost.mail.outbox import enqueue
from roost.records.fields import format_datetime, now_iso
from roost.settings import Settings
from roost.storage.base import Connection, Storage
from roost.types import JSONObject

Purpose = Literal["reset", "verify"]
LIFETIMES = {"reset": timedelta(hours=1), "verify": timedelta(days=3)}
INVALID = "the link is invalid, used or expired; ask for a new one"


class Recovery:
    def __init__(
        self, storage: Storage, accounts: Accounts, settings: Settings, wake: Callable[[], None]
    ) -> None:
        self._storage = storage
        self._accounts = accounts
        self._settings = settings
        self._wake = wake

    async def forgot_password(self, email: object) -> None:
        """Mail a reset link if ``email`` has an account; say nothing either way."""
        if not isinstance(email, str) or len(email) > 254:
            return
        address = email.strip().lower()
        async with self._storage.write() as conn:
            user = await self._accounts.user_by_email(conn, address)
            if user is None:
                return
            token = await _make(conn, user["id"], "reset", address)
            link = self._link(self._settings.reset_password_url, "reset-password", token)
            await enqueue(
                conn,
                Mail(
                    recipient=address,
                    subject="Reset your password",
                    body=f"Someone asked to reset the password of this account.\n\n"
                    f"Choose a new one here (valid for one hour): {link}\n\n"
                    "If it was not you, ignore this mail: nothing changes.\n",
                ),
            )
        self._wake()

    async def reset_password(self, token: object, password: object) -> None:
        """Set a new password with a reset token; every session of the account and every
        other reset link sent to it end."""
        password_hash = await self._accounts.passwords.hash(checked_password(password))
        async with self._storage.write() as conn:
            user = await self._use(conn, token, "reset")
            user_id = user["id"]
            await store_password_hash(conn, user_id, password_hash)
            await sessions.revoke_all(conn, user_id)
            await conn.execute(  # any other reset link, maybe seen by someone else, dies too
                "UPDATE _one_time_tokens SET used = ?"
                " WHERE user_id = ? AND purpose = 'reset' AND used IS NULL",
                (now_iso(), user_id),
            )
            if not user.get("verified"):  # the link proved the address is theirs
                await self._accounts.update_user(conn, user_id, {"verified": True})

    async def request_verification(self, principal: Principal) -> None:
        if principal.id is None:
            raise Unauthorized("sign in first")
        async with self._storage.write() as conn:
            user = await self._accounts.user(conn, principal.id)
            address = user.get("email")
            if not isinstance(address, str):
                raise BadRequest("this account has no email address to verify")
            if user.get("verified"):
                raise Conflict("this email address is already verified")
            token = await _make(conn, principal.id, "verify", address)
            link = self._link(self._settings.verify_email_url, "verify-email", token)
            await enqueue(
                conn,
                Mail(
                    recipient=address,
                    subject="Confirm your email address",
                    body=f"Confirm this address for your account: {link}\n",
                ),
            )
        self._wake()

    async def confirm_verification(self, token: object) -> JSONObject:
        async with self._storage.write() as conn:
            user = await self._use(conn, token, "verify")
            return await self._accounts.update_user(conn, user["id"], {"verified": True})

    async def _use(self, conn: Connection, token: object, purpose: Purpose) -> JSONObject:
        """Spend a token: its user, or Unauthorized if it is unknown, used, expired, or was
        sent to an address the account no longer has (an admin changed it since)."""
        user_id, email = await _use(conn, token, purpose)
        user = await self._accounts.user(conn, user_id)
        if user.get("email") != email:
            raise Unauthorized(INVALID)
        return user

    def _link(self, template: str, page: str, token: str) -> str:
        if template:
            return template.replace("{token}", token)
        return f"{self._settings.base_url()}/auth/{page}?token={token}"


async def _make(conn: Connection, user_id: str, purpose: Purpose, email: str) -> str:
    token = new_secret()
    expires = format_datetime(datetime.now(UTC) + LIFETIMES[purpose])
    await conn.execute(
        "INSERT INTO _one_time_tokens (token_hash, user_id, purpose, email, created, expires)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (digest(token), user_id, purpose, email, now_iso(), expires),
    )
    return token


async def _use(conn: Connection, token: object, purpose: Purpose) -> tuple[str, str]:
    """Spend a token: its user id and the address it was sent to, or Unauthorized if it is
    unknown, used or expired."""
    if not isinstance(token, str) or not 0 < len(token) <= 200:
        raise Unauthorized(INVALID)
    row = await conn.fetch_one(
        "SELECT user_id, email, expires, used FROM _one_time_tokens"
        " WHERE token_hash = ? AND purpose = ?" + conn.row_lock,  # spent once, even in a race
        (digest(token), purpose),
    )
    if row is None or row["used"] is not None or row["expires"] < now_iso():
        raise Unauthorized(INVALID)
    await conn.execute(
        "UPDATE _one_time_tokens SET used = ? WHERE token_hash = ?", (now_iso(), digest(token))
    )
    return str(row["user_id"]), str(row["email"])
