"""Idempotency keys: a retried write returns the first result and writes nothing twice.

The key is looked up and the result stored inside the same write transaction as the write
itself, so two concurrent retries serialise and the second one finds the first's result.
Only successful results are kept: a failed attempt wrote nothing and may be retried.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from roost.errors import BadRequest, IdempotencyKeyReused
from roost.storage.base import Connection
from roost.types import JSON

MAX_KEY_LENGTH = 255
PURGE_PROBABILITY = 0.01


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a write: HTTP status and JSON body (None for no body)."""

    status: int
    body: JSON = None


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    scope: str
    key: str
    request_hash: str


def idempotent_request(
    key: str | None, scope: str, method: str, path: str, body: bytes
) -> IdempotentRequest | None:
    """The request's identity for replay, or None when it carries no key."""
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise BadRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    digest = hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()
    return IdempotentRequest(scope=scope, key=key, request_hash=digest)


async def recall(conn: Connection, request: IdempotentRequest, ttl: int) -> Outcome | None:
    """The stored outcome of an earlier request with this key, or None after claiming the key.

    The claim is a placeholder row written in the caller's transaction: a concurrent
    request with the same key waits on it (PostgreSQL runs writers in parallel) until this
    transaction ends, then sees the stored outcome, or claims the key itself if this one
    rolled back. So two retries racing each other write once.
    """
    now = datetime.now(UTC).isoformat()
    claimed = await conn.execute(
        "INSERT INTO _idempotency (scope, key, request_hash, status, headers, body, created)"
        " VALUES (?, ?, ?, 0, '{}', ?, ?) ON CONFLICT (scope, key) DO NOTHING",
        (request.scope, request.key, request.request_hash, b"", now),
    )
    if claimed:
        return None
    expired = await conn.execute(
        "UPDATE _idempotency SET request_hash = ?, status = 0, body = ?, created = ?"
        " WHERE scope = ? AND key = ? AND created < ?",
        (request.request_hash, b"", now, request.scope, request.key, _cutoff(ttl)),
    )
    if expired:
        return None
    row = await conn.fetch_one(
        "SELECT request_hash, status, body FROM _idempotency WHERE scope = ? AND key = ?",
        (request.scope, request.key),
    )
    if row is None:  # an expired row purged between the two statements: claim afresh
        return await recall(conn, request, ttl)
    if row["request_hash"] != request.request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    return Outcome(status=row["status"], body=orjson.loads(row["body"]))


async def remember(
    conn: Connection, request: IdempotentRequest, outcome: Outcome, ttl: int
) -> None:
    """Store ``outcome`` under the key, in the caller's write transaction."""
    if random.random() < PURGE_PROBABILITY:
        await conn.execute("DELETE FROM _idempotency WHERE created < ?", (_cutoff(ttl),))
    await conn.execute(
        "INSERT INTO _idempotency (scope, key, request_hash, status, headers, body, created)"
        " VALUES (?, ?, ?, ?, '{}', ?, ?) ON CONFLICT (scope, key) DO UPDATE SET"
        " request_hash = excluded.request_hash, status = excluded.status,"
        " body = excluded.body, created = excluded.created",
        (
            request.scope,
            request.key,
            request.request_hash,
            outcome.status,
            orjson.dumps(outcome.body),
            datetime.now(UTC).isoformat(),
        ),
    )


def _cutoff(ttl: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=ttl)).isoformat()
