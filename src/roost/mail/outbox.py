"""The durable outbox: mail is queued in the database and delivered by a worker.

A service calls ``enqueue(conn, mail)`` inside its own write transaction, so a mail is
queued if and only if the business write commits, and then ``worker.notify()`` after the
commit so the local worker sends it at once (workers of other instances find it at their
next poll).

Delivery, per ``_outbox`` row:

1. Claim: one write transaction picks up to ``batch_size`` due rows (not sent, next
   attempt reached, no live lease), sets ``claimed_until`` = now + lease and counts the
   attempt. Several workers, in one process or many, never hold the same row at once.
2. Send, outside any transaction, one mail at a time, each within ``send_timeout``. A row
   whose lease could run out before its send ends is released unsent instead.
3. Record: ``sent`` (and the body, which may hold a sign-in link, is blanked), or a retry
   at now + exponential backoff with jitter (capped) and ``last_error``; after
   ``max_attempts`` attempts, or when the server refused the mail for good, the row is
   kept as a dead letter: ``next_attempt = GAVE_UP``, ``last_error`` says why.

A mail is never sent by two workers at the same time. If a process dies after the server
accepted a mail and before ``sent`` is committed, the mail is sent again once the lease
expires: delivery is at least once, and exactly once whenever nothing crashes in that
window. Sent and dead rows are deleted after ``retention``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from roost.mail.base import Mail, Mailer, MailError
from roost.storage.base import Connection, Row, Storage, StorageError

BATCH_SIZE = 10
"""Rows one worker claims per round."""
SEND_TIMEOUT_SECONDS = 90.0
"""Longest one send may take before it counts as failed (the mailer has its own, shorter)."""
LEASE_SECONDS = 5 * 60.0
"""How long a claim lasts: a worker that died mid-batch delays its mail by at most this."""
MAX_ATTEMPTS = 10
"""Attempts before a mail becomes a dead letter (about three hours of retrying)."""
RETRY_BASE_SECONDS = 30.0
"""Delay after the first failed attempt; it doubles with each further failure..."""
RETRY_CAP_SECONDS = 3600.0
"""...up to this."""
POLL_SECONDS = 2.0
"""How often an idle worker looks for due mail (retries, and mail queued elsewhere)."""
RETENTION = timedelta(days=7)
"""How long sent and dead rows are kept (for inspection) before they are deleted."""
PURGE_SECONDS = 3600.0
"""How often a running worker deletes rows older than the retention."""
MAX_ERROR_LENGTH = 500

GAVE_UP = "9999-12-31T23:59:59.999Z"
"""``next_attempt`` of a dead letter: later than any real time, so it is never due."""

log = structlog.get_logger("roost.mail")


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    """The worker's limits; the defaults are the module's constants."""

    batch_size: int = BATCH_SIZE
    send_timeout: float = SEND_TIMEOUT_SECONDS
    lease: float = LEASE_SECONDS
    max_attempts: int = MAX_ATTEMPTS
    retry_base: float = RETRY_BASE_SECONDS
    retry_cap: float = RETRY_CAP_SECONDS
    poll: float = POLL_SECONDS
    retention: timedelta = RETENTION
    purge_every: float = PURGE_SECONDS

    def __post_init__(self) -> None:
        if self.lease <= self.send_timeout:
            raise ValueError("the lease must be longer than one send")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Roost's timestamp text, ``2026-11-28T18:04:02.123Z`` (lexical order is time order)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def enqueue(conn: Connection, mail: Mail, *, now: datetime | None = None) -> None:
    """Queue ``mail`` inside the caller's write transaction ``conn``; due at once."""
    at = iso(now or utc_now())
    await conn.execute(
        "INSERT INTO _outbox (recipient, subject, body, created, next_attempt)"
        " VALUES (?, ?, ?, ?, ?)",
        (mail.recipient, mail.subject, mail.body, at, at),
    )


def backoff_seconds(
    attempts: int, policy: OutboxPolicy, jitter: Callable[[], float] = random.random
) -> float:
    """Delay after ``attempts`` failed attempts: exponential, capped, half of it random."""
    delay = min(policy.retry_cap, policy.retry_base * 2.0 ** min(attempts - 1, 32))
    return delay / 2 + delay / 2 * jitter()


class OutboxWorker:
    """Delivers queued mail through ``mailer``; any number may run against one database."""

    def __init__(
        self,
        storage: Storage,
        mailer: Mailer,
        *,
        policy: OutboxPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._storage = storage
        self._mailer = mailer
        self._policy = policy or OutboxPolicy()
        self._clock = clock
        self._jitter = jitter
        self._wake = asyncio.Event()
        self.queued = 0
        """Mail queued and not yet sent (retries due later included, dead letters not), as
        counted at the last look for due mail: for metrics."""

    def notify(self) -> None:
        """Mail was queued: look for it now instead of at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch of due mail and try to send it; return how many were sent."""
        _, sent = await self._round()
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; a failing database is logged and retried.

        Once ``stop`` is set, the send in progress ends (within its timeout) and the rest
        of the batch is released for another worker, so shutdown waits for one send at most.
        """
        last_purge: float | None = None
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._wake.clear()  # a notify() from here on wakes the next wait
            claimed = 0
            try:
                if last_purge is None or loop.time() - last_purge >= self._policy.purge_every:
                    await self.purge()
                    last_purge = loop.time()
                claimed, _ = await self._round(stop)
            except StorageError as exc:  # the database is down: expected, retried, no trace
                log.warning("outbox round failed: database unavailable", error=str(exc))
            except Exception:
                log.exception("outbox round failed")
            if claimed < self._policy.batch_size:
                await self._wait(stop)

    async def purge(self) -> int:
        """Delete sent and dead rows older than the retention; return how many."""
        cutoff = iso(self._clock() - self._policy.retention)
        async with self._storage.write() as conn:
            return await conn.execute(
                "DELETE FROM _outbox WHERE (sent IS NOT NULL AND sent < ?)"
                " OR (sent IS NULL AND next_attempt = ? AND created < ?)",
                (cutoff, GAVE_UP, cutoff),
            )

    async def _round(self, stop: asyncio.Event | None = None) -> tuple[int, int]:
        rows, lease_end = await self._claim()
        sent = 0
        for index, row in enumerate(rows):
            out_of_time = self._clock() + timedelta(seconds=self._policy.send_timeout) >= lease_end
            if out_of_time or (stop is not None and stop.is_set()):
                await self._release(rows[index:], lease_end)
                break
            sent += await self._deliver(row, iso(lease_end))
        return len(rows), sent

    async def _claim(self) -> tuple[list[Row], datetime]:
        now = self._clock()
        lease_end = now + timedelta(seconds=self._policy.lease)
        async with self._storage.read() as conn:  # idle polls never take the write lock
            found = await conn.fetch_one(
                "SELECT count(*) AS queued, count(CASE WHEN next_attempt <= ?"
                " AND (claimed_until IS NULL OR claimed_until <= ?) THEN 1 END) AS due"
                " FROM _outbox WHERE sent IS NULL AND next_attempt < ?",
                (iso(now), iso(now), GAVE_UP),
            )
        assert found is not None
        self.queued = found["queued"]
        if not found["due"]:
            return [], lease_end
        async with self._storage.write() as conn:
            # The outer test repeats the claim condition: on PostgreSQL, a worker whose
            # UPDATE waited for another's to commit re-checks only the outer WHERE on the
            # new row versions, so it skips rows the other has just claimed.
            rows = await conn.fetch_all(
                "UPDATE _outbox SET claimed_until = ?, attempts = attempts + 1"
                " WHERE id IN (SELECT id FROM _outbox WHERE sent IS NULL AND next_attempt <= ?"
                " AND (claimed_until IS NULL OR claimed_until <= ?)"
                " ORDER BY next_attempt, id LIMIT ?)"
                " AND sent IS NULL AND (claimed_until IS NULL OR claimed_until <= ?)"
                " RETURNING id, recipient, subject, body, attempts",
                (iso(lease_end), iso(now), iso(now), self._policy.batch_size, iso(now)),
            )
        return sorted(rows, key=lambda row: int(row["id"])), lease_end

    async def _deliver(self, row: Row, lease: str) -> int:
        try:
            mail = Mail(row["recipient"], row["subject"], row["body"])
            async with asyncio.timeout(self._policy.send_timeout):
                await self._mailer.send(mail)
        except MailError as exc:
            await self._failed(row, lease, str(exc), permanent=exc.permanent)
            return 0
        except TimeoutError:
            await self._failed(row, lease, f"no answer in {self._policy.send_timeout:g} s")
            return 0
        except Exception as exc:  # a bug in a mailer must not stop delivery of the rest
            log.exception("mailer failed unexpectedly", outbox_id=row["id"])
            await self._failed(row, lease, f"unexpected {type(exc).__name__}")
            return 0
        async with self._storage.write() as conn:  # even if the lease was lost: it was sent
            await conn.execute(
                "UPDATE _outbox SET sent = ?, claimed_until = NULL, last_error = NULL,"
                " body = '' WHERE id = ?",
                (iso(self._clock()), row["id"]),
            )
        log.info("mail sent", outbox_id=row["id"], attempts=row["attempts"])
        return 1

    async def _failed(self, row: Row, lease: str, error: str, *, permanent: bool = False) -> None:
        attempts = int(row["attempts"])
        error = error[:MAX_ERROR_LENGTH]
        if permanent or attempts >= self._policy.max_attempts:
            next_attempt = GAVE_UP
            log.error("mail given up", outbox_id=row["id"], attempts=attempts, error=error)
        else:
            delay = backoff_seconds(attempts, self._policy, self._jitter)
            next_attempt = iso(self._clock() + timedelta(seconds=delay))
            log.warning(
                "mail not sent, will retry",
                outbox_id=row["id"],
                attempts=attempts,
                retry_at=next_attempt,
                error=error,
            )
        async with self._storage.write() as conn:
            await conn.execute(
                "UPDATE _outbox SET next_attempt = ?, claimed_until = NULL, last_error = ?"
                " WHERE id = ? AND claimed_until = ? AND sent IS NULL",
                (next_attempt, error, row["id"], lease),
            )

    async def _release(self, rows: list[Row], lease_end: datetime) -> None:
        """Give back claimed rows this round will not send (not counted as an attempt)."""
        async with self._storage.write() as conn:
            for row in rows:
                await conn.execute(
                    "UPDATE _outbox SET claimed_until = NULL, attempts = attempts - 1"
                    " WHERE id = ? AND claimed_until = ?",
                    (row["id"], iso(lease_end)),
                )

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=self._policy.poll, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
