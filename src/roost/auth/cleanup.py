"""Expired sign-in state, deleted by the instances of the ``worker`` role (and ``all``).

Sessions (with their refresh tokens) go a day after they expired or were revoked, and
one-time tokens (password reset, email verification) a day after they expired or were
used: the day keeps them for an operator looking into a sign-in problem, and nothing
reads them any more (an expired or revoked session refreshes nothing, a used or expired
token is refused alike whether its row is there or not).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from roost.records.fields import format_datetime
from roost.storage.base import Storage

KEPT = timedelta(days=1)


async def purge_expired(storage: Storage, now: datetime | None = None) -> int:
    """Delete what ended more than ``KEPT`` before ``now``; how many rows went."""
    cutoff = format_datetime((now or datetime.now(UTC)) - KEPT)
    ended = "expires < ? OR revoked < ?"
    async with storage.write() as conn:
        deleted = await conn.execute(
            f"DELETE FROM _refresh_tokens WHERE session_id IN (SELECT id FROM _sessions"
            f" WHERE {ended})",
            (cutoff, cutoff),
        )
        deleted += await conn.execute(f"DELETE FROM _sessions WHERE {ended}", (cutoff, cutoff))
        deleted += await conn.execute(
            "DELETE FROM _one_time_tokens WHERE expires < ? OR used < ?", (cutoff, cutoff)
        )
    return deleted
