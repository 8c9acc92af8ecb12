"""Sessions (one per signed-in device) and their rotating refresh tokens.

A session is a family of refresh tokens: each refresh uses one token and issues the next.
Presenting a used token again means it was copied: the whole session is revoked. One
exception keeps flaky networks from signing users out: a token reused within
``REUSE_GRACE_SECONDS`` of its first use, while its successor is still unused, gets a new
successor (the unused one is retired), as happens when the first answer was lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from roost.auth.tokens import digest, new_secret
from roost.errors import NotFound, Unauthorized
from roost.ids import new_id
from roost.records.fields import format_datetime, now_iso
from roost.storage.base import Connection, Row

REUSE_GRACE_SECONDS = 30
MAX_DEVICE_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    user_agent: str
    ip: str


def _later(seconds: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds))


def _ago(seconds: int) -> str:
    return format_datetime(datetime.now(UTC) - timedelta(seconds=seconds))


async def open_session(conn: Connection, user_id: str, device: Device, ttl: int) -> tuple[str, str]:
    """A new session for ``user_id``; returns its id and first refresh token."""
    session_id = new_id()
    now = now_iso()
    await conn.execute(
        "INSERT INTO _sessions (id, user_id, device, user_agent, ip, created, last_used, expires)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            session_id,
            user_id,
            device.name[:MAX_DEVICE_LENGTH],
            device.user_agent[:MAX_DEVICE_LENGTH],
            device.ip,
            now,
            now,
            _later(ttl),
        ),
    )
    return session_id, await _issue(conn, session_id)


async def _issue(conn: Connection, session_id: str) -> str:
    token = new_secret()
    await conn.execute(
        "INSERT INTO _refresh_tokens (token_hash, session_id, created) VALUES (?, ?, ?)",
        (digest(token), session_id, now_iso()),
    )
    return token


class Replayed(Unauthorized):
    """A used refresh token came back: its session was revoked in the caller's transaction,
    which must be committed before this is raised to the client."""


INVALID = "the refresh token is invalid, used or revoked; sign in again"


async def rotate(conn: Connection, refresh_token: str, ttl: int) -> tuple[Row, str]:
    """Use ``refresh_token``: its live session and the next token, or Unauthorized.

    Raises ``Replayed`` after revoking the session: commit, then refuse.
    """
    invalid = Unauthorized(INVALID)
    if not refresh_token or len(refresh_token) > 200:
        raise invalid
    used = await conn.fetch_one(
        "SELECT t.used, s.* FROM _refresh_tokens t JOIN _sessions s ON s.id = t.session_id"
        " WHERE t.token_hash = ?" + conn.row_lock,  # two refreshes with one token: in turn
        (digest(refresh_token),),
    )
    if used is None or used["revoked"] is not None or used["expires"] < now_iso():
        raise invalid
    session_id = used["id"]
    if used["used"] is not None:
        if not await _lost_answer(conn, session_id, used["used"]):
            await revoke(conn, session_id)
            raise Replayed(INVALID)
        await conn.execute(
            "UPDATE _refresh_tokens SET used = ? WHERE session_id = ? AND used IS NULL",
            (now_iso(), session_id),
        )
    else:
        await conn.execute(
            "UPDATE _refresh_tokens SET used = ? WHERE token_hash = ?",
            (now_iso(), digest(refresh_token)),
        )
    await conn.execute(
        "UPDATE _sessions SET last_used = ?, expires = ? WHERE id = ?",
        (now_iso(), _later(ttl), session_id),
    )
    return used, await _issue(conn, session_id)


async def _lost_answer(conn: Connection, session_id: str, used_at: str) -> bool:
    """A reuse soon after first use, whose successor was never used: a retried request."""
    if used_at < _ago(REUSE_GRACE_SECONDS):
        return False
    row = await conn.fetch_one(
        "SELECT count(*) AS n FROM _refresh_tokens WHERE session_id = ? AND used > ?",
        (session_id, used_at),
    )
    return row is not None and row["n"] == 0


async def revoke(conn: Connection, session_id: str) -> None:
    await conn.execute(
        "UPDATE _sessions SET revoked = ? WHERE id = ? AND revoked IS NULL",
        (now_iso(), session_id),
    )


async def revoke_one(conn: Connection, user_id: str, session_id: str) -> None:
    """Revoke one of ``user_id``'s sessions; NotFound if it is not theirs or not live."""
    changed = await conn.execute(
        "UPDATE _sessions SET revoked = ? WHERE id = ? AND user_id = ? AND revoked IS NULL",
        (now_iso(), session_id, user_id),
    )
    if changed == 0:
        raise NotFound("no such session")


async def revoke_all(conn: Connection, user_id: str, keep: str | None = None) -> int:
    """Revoke every live session of ``user_id`` except ``keep``; return how many."""
    return await conn.execute(
        "UPDATE _sessions SET revoked = ? WHERE user_id = ? AND revoked IS NULL AND id != ?",
        (now_iso(), user_id, keep or ""),
    )


async def live_sessions(conn: Connection, user_id: str) -> list[Row]:
    return await conn.fetch_all(
        "SELECT id, device, user_agent, ip, created, last_used, expires FROM _sessions"
        " WHERE user_id = ? AND revoked IS NULL AND expires > ? ORDER BY last_used DESC",
        (user_id, now_iso()),
    )
