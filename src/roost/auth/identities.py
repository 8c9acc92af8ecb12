"""Sign in with Apple / Google: an ID token verified against its provider becomes a session.

A provider identity (provider, subject) is linked to one user. On first sign-in it links to
an existing account only when the provider vouches for the email (``email_verified``);
otherwise a new user is created, so nobody takes over an account by claiming its address.
"""

from __future__ import annotations

from roost.auth.oidc import IdentityVerifier, VerifiedIdentity
from roost.auth.service import Accounts, SignedIn
from roost.auth.sessions import Device
from roost.records.collections import USERS
from roost.records.fields import now_iso
from roost.storage.base import Connection, Storage, table_name
from roost.types import JSONObject


class IdentitySignIn:
    def __init__(self, storage: Storage, accounts: Accounts, verifier: IdentityVerifier) -> None:
        self._storage = storage
        self._accounts = accounts
        self._verifier = verifier

    async def sign_in(
        self, provider: str, id_token: str, nonce: str | None, device: Device
    ) -> SignedIn:
        identity = await self._verifier.verify(provider, id_token, nonce)
        async with self._storage.write() as conn:
            user = await self._linked_user(conn, identity)
            return await self._accounts.open_session(conn, user, device)

    async def _linked_user(self, conn: Connection, identity: VerifiedIdentity) -> JSONObject:
        link = await conn.fetch_one(
            f"SELECT i.user_id, u.id AS present FROM _identities i"
            f" LEFT JOIN {table_name(USERS)} u ON u.id = i.user_id"
            " WHERE i.provider = ? AND i.subject = ?",
            (identity.provider, identity.subject),
        )
        if link is not None and link["present"] is not None:
            return await self._accounts.user(conn, link["user_id"])
        if link is not None:  # its user was deleted without it (an admin deleted the record)
            await conn.execute(
                "DELETE FROM _identities WHERE provider = ? AND subject = ?",
                (identity.provider, identity.subject),
            )
        vouched = identity.email if identity.email_verified else None
        user = await self._accounts.user_by_email(conn, vouched) if vouched else None
        if user is not None and not user.get("verified"):
            user = await self._accounts.update_user(conn, user["id"], {"verified": True})
        if user is None:
            data: JSONObject = {"anonymous": False, "verified": vouched is not None}
            if vouched is not None:
                data["email"] = vouched
            user = await self._accounts.create_user(conn, data)
        await conn.execute(
            "INSERT INTO _identities (provider, subject, user_id, created) VALUES (?, ?, ?, ?)",
            (identity.provider, identity.subject, user["id"], now_iso()),
        )
        return user

    async def aclose(self) -> None:
        await self._verifier.aclose()
