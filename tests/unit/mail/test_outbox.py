"""The durable outbox over a real database (SQLite and PostgreSQL) and a real SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog.testing

from conftest import make_settings
from roost.mail.base import Mail, Mailer, MailError
from roost.mail.console import NOT_SENT, ConsoleMailer
from roost.mail.outbox import (
    GAVE_UP,
    RETRY_CAP_SECONDS,
    OutboxPolicy,
    OutboxWorker,
    backoff_seconds,
    enqueue,
    iso,
)
from roost.mail.smtp import SMTPMailer
from roost.settings import Settings
from roost.storage.base import Row, Storage, open_storage
from smtp_server import SMTPTestServer

T0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
PASSWORD = "outbox-Secret-123"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recording(Mailer):
    """Accepts everything; optionally moves a clock on with every send."""

    def __init__(self, clock: Clock | None = None, seconds_per_send: float = 0) -> None:
        self.sent: list[Mail] = []
        self._clock = clock
        self._seconds = seconds_per_send

    async def send(self, message: Mail) -> None:
        self.sent.append(message)
        if self._clock is not None:
            self._clock.advance(self._seconds)

    async def aclose(self) -> None:
        return None


class Broken(Mailer):
    async def send(self, message: Mail) -> None:
        raise RuntimeError(f"bug while sending to {message.recipient}")

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def storage(settings: Settings) -> AsyncIterator[Storage]:
    backend = open_storage(settings)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def server() -> AsyncIterator[SMTPTestServer]:
    async with SMTPTestServer(username="roost", password=PASSWORD) as running:
        yield running


@pytest.fixture
def smtp(tmp_path: Path, server: SMTPTestServer) -> SMTPMailer:
    return SMTPMailer(make_settings(tmp_path, smtp_url=server.url(starttls="off")))


def mail(number: int = 0) -> Mail:
    return Mail(
        f"user{number}@example.com",
        f"Verify your address #{number}",
        f"Open https://roost.example/verify?token=t{number}\n",
    )


async def queue(storage: Storage, *mails: Mail, now: datetime = T0) -> None:
    async with storage.write() as conn:
        for item in mails:
            await enqueue(conn, item, now=now)


async def rows(storage: Storage) -> list[Row]:
    async with storage.read() as conn:
        return await conn.fetch_all("SELECT * FROM _outbox ORDER BY id")


async def test_a_mail_queued_in_a_rolled_back_transaction_is_never_sent(
    storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    with pytest.raises(RuntimeError):
        async with storage.write() as conn:
            await enqueue(conn, mail())
            raise RuntimeError("the business write failed")
    assert await rows(storage) == []
    assert await OutboxWorker(storage, smtp).run_once() == 0
    assert server.received == [] and server.connections == 0


async def test_a_queued_mail_is_delivered_once_and_marked_sent(
    storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    await queue(storage, mail(1))
    worker = OutboxWorker(storage, smtp)
    assert await worker.run_once() == 1
    [received] = await server.wait_for(1)
    assert received.rcpt_tos == ["user1@example.com"]
    assert received.message["To"] == "user1@example.com"
    assert received.message["Subject"] == "Verify your address #1"
    assert received.body == "Open https://roost.example/verify?token=t1\n"
    assert received.authenticated

    [row] = await rows(storage)
    assert row["sent"] is not None and row["attempts"] == 1
    assert row["claimed_until"] is None and row["last_error"] is None
    assert row["body"] == ""  # the link is not kept once it was delivered
    assert await worker.run_once() == 0
    assert len(server.received) == 1


async def test_an_outage_is_retried_with_backoff_and_nothing_is_lost_or_doubled(
    storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    clock = Clock()
    worker = OutboxWorker(storage, smtp, clock=clock)
    await server.stop()
    await queue(storage, mail(1), mail(2))

    assert await worker.run_once() == 0
    for row in await rows(storage):
        assert row["attempts"] == 1 and row["sent"] is None and row["claimed_until"] is None
        assert iso(T0 + timedelta(seconds=15)) <= row["next_attempt"]
        assert row["next_attempt"] <= iso(T0 + timedelta(seconds=30))
        assert "SMTP" in row["last_error"] and PASSWORD not in row["last_error"]
    assert await worker.run_once() == 0  # not due yet: no new attempt
    assert {row["attempts"] for row in await rows(storage)} == {1}

    clock.advance(30)
    assert await worker.run_once() == 0  # still down: the second delay is 30 to 60 s
    for row in await rows(storage):
        assert row["attempts"] == 2
        assert iso(clock.now + timedelta(seconds=30)) <= row["next_attempt"]
        assert row["next_attempt"] <= iso(clock.now + timedelta(seconds=60))

    await server.start()
    clock.advance(60)
    assert await worker.run_once() == 2
    received = await server.wait_for(2)
    assert sorted(item.rcpt_tos[0] for item in received) == [
        "user1@example.com",
        "user2@example.com",
    ]
    clock.advance(RETRY_CAP_SECONDS)
    assert await worker.run_once() == 0
    assert len(server.received) == 2


async def test_the_running_worker_rides_out_an_outage(
    storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    policy = OutboxPolicy(retry_base=0.02, retry_cap=0.05, poll=0.02, max_attempts=1000)
    worker = OutboxWorker(storage, smtp, policy=policy)
    stop = asyncio.Event()
    await server.stop()
    running = asyncio.create_task(worker.run(stop))
    try:
        await queue(storage, mail(1))
        worker.notify()
        async with asyncio.timeout(10):
            while (await rows(storage))[0]["attempts"] < 3:
                await asyncio.sleep(0.01)
        await server.start()
        await server.wait_for(1)
    finally:
        stop.set()
        await running
    await asyncio.sleep(0.1)
    [row] = await rows(storage)
    assert row["sent"] is not None and row["attempts"] >= 3
    assert len(server.received) == 1


async def test_notify_wakes_an_idle_worker_at_once(
    storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    worker = OutboxWorker(storage, smtp, policy=OutboxPolicy(poll=60))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.05)  # the worker found nothing and waits up to 60 s
        await queue(storage, mail(1))
        worker.notify()
        await server.wait_for(1, timeout=2)
    finally:
        stop.set()
        async with asyncio.timeout(2):  # stop ends the wait too
            await running


async def test_two_instances_deliver_each_mail_exactly_once(
    settings: Settings, storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    other = open_storage(settings)  # a second instance on the same database
    await other.open()
    try:
        count = 30
        await queue(storage, *(mail(n) for n in range(count)))
        policy = OutboxPolicy(batch_size=4)
        workers = [
            OutboxWorker(storage, smtp, policy=policy),
            OutboxWorker(other, smtp, policy=policy),
        ]

        async def drain(worker: OutboxWorker) -> int:
            total = 0
            while any(row["sent"] is None for row in await rows(storage)):
                total += await worker.run_once()  # 0 when the other claimed first
                await asyncio.sleep(0)  # a poll that found nothing to claim awaited nothing
            return total

        first, second = await asyncio.gather(*(drain(worker) for worker in workers))
    finally:
        await other.aclose()
    assert first + second == count
    received = await server.wait_for(count)
    recipients = [item.rcpt_tos[0] for item in received]
    assert sorted(recipients) == sorted(f"user{n}@example.com" for n in range(count))
    assert all(row["sent"] is not None and row["attempts"] == 1 for row in await rows(storage))


async def test_a_claim_of_a_dead_worker_is_taken_over_after_its_lease(
    storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    await queue(storage, mail(1))
    lease_end = T0 + timedelta(seconds=OutboxPolicy().lease)
    async with storage.write() as conn:  # what a worker that crashed mid-send leaves behind
        await conn.execute("UPDATE _outbox SET claimed_until = ?, attempts = 1", (iso(lease_end),))
    clock = Clock()
    worker = OutboxWorker(storage, smtp, clock=clock)
    clock.advance(OutboxPolicy().lease - 1)
    assert await worker.run_once() == 0
    clock.advance(1)
    assert await worker.run_once() == 1
    assert len(await server.wait_for(1)) == 1
    assert (await rows(storage))[0]["attempts"] == 2


async def test_rows_the_lease_has_no_time_for_are_released_unsent(storage: Storage) -> None:
    clock = Clock()
    mailer = Recording(clock, seconds_per_send=40)
    policy = OutboxPolicy(lease=100, send_timeout=30)
    await queue(storage, mail(1), mail(2), mail(3))
    worker = OutboxWorker(storage, mailer, policy=policy, clock=clock)
    assert await worker.run_once() == 2  # at 0 s and 40 s; at 80 s a send could outlive it
    pending = [row for row in await rows(storage) if row["sent"] is None]
    assert [(row["recipient"], row["attempts"], row["claimed_until"]) for row in pending] == [
        ("user3@example.com", 0, None)
    ]
    assert await worker.run_once() == 1
    assert [item.recipient for item in mailer.sent] == [f"user{n}@example.com" for n in (1, 2, 3)]


async def test_after_max_attempts_a_mail_is_kept_as_a_dead_letter(
    storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    server.refuse_with = "451 4.3.0 Mailbox busy"
    clock = Clock()
    worker = OutboxWorker(storage, smtp, policy=OutboxPolicy(max_attempts=3), clock=clock)
    await queue(storage, mail(1))
    for _ in range(5):
        await worker.run_once()
        clock.advance(RETRY_CAP_SECONDS)
    [row] = await rows(storage)
    assert (row["attempts"], row["next_attempt"], row["sent"]) == (3, GAVE_UP, None)
    assert "451" in row["last_error"] and row["body"]  # kept whole, for inspection


async def test_a_permanent_refusal_gives_up_at_once(
    storage: Storage, server: SMTPTestServer, smtp: SMTPMailer
) -> None:
    server.refuse_with = "550 5.1.1 No such user"
    await queue(storage, mail(1))
    assert await OutboxWorker(storage, smtp).run_once() == 0
    [row] = await rows(storage)
    assert (row["attempts"], row["next_attempt"]) == (1, GAVE_UP)
    assert "550" in row["last_error"]


async def test_a_bug_in_the_mailer_is_logged_and_retried_without_details(
    storage: Storage,
) -> None:
    await queue(storage, mail(1))
    with structlog.testing.capture_logs() as logs:
        assert await OutboxWorker(storage, Broken()).run_once() == 0
    [row] = await rows(storage)
    assert row["last_error"] == "unexpected RuntimeError" and row["next_attempt"] != GAVE_UP
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "mailer failed unexpectedly"
    ]


async def test_the_console_mailer_logs_the_queued_mail_with_its_link(
    tmp_path: Path, storage: Storage
) -> None:
    await queue(storage, mail(7))
    with structlog.testing.capture_logs() as logs:
        assert await OutboxWorker(storage, ConsoleMailer(make_settings(tmp_path))).run_once() == 1
    [entry] = [entry for entry in logs if entry["event"] == NOT_SENT]
    assert entry["log_level"] == "warning"
    assert entry["recipient"] == "user7@example.com"
    assert entry["subject"] == "Verify your address #7"
    assert entry["links"] == ["https://roost.example/verify?token=t7"]
    assert entry["body"] == "Open https://roost.example/verify?token=t7\n"


async def test_purge_deletes_old_sent_and_dead_rows_only(storage: Storage) -> None:
    clock = Clock()
    worker = OutboxWorker(storage, Recording(), clock=clock)
    await queue(storage, mail(1), mail(2), mail(3))
    async with storage.write() as conn:
        await conn.execute("UPDATE _outbox SET sent = ? WHERE id = 1", (iso(T0),))
        await conn.execute("UPDATE _outbox SET next_attempt = ? WHERE id = 2", (GAVE_UP,))
    assert await worker.purge() == 0
    clock.advance(OutboxPolicy().retention.total_seconds() + 1)
    assert await worker.purge() == 2
    assert [row["id"] for row in await rows(storage)] == [3]


@pytest.mark.parametrize("attempts", range(1, 20))
def test_backoff_doubles_with_jitter_up_to_the_cap(attempts: int) -> None:
    policy = OutboxPolicy()
    delay = min(policy.retry_cap, policy.retry_base * 2 ** (attempts - 1))
    assert backoff_seconds(attempts, policy, lambda: 0.0) == delay / 2
    assert backoff_seconds(attempts, policy, lambda: 1.0) == delay
    assert backoff_seconds(attempts, policy) <= RETRY_CAP_SECONDS


def test_a_lease_shorter_than_a_send_is_refused() -> None:
    with pytest.raises(ValueError):
        OutboxPolicy(lease=10, send_timeout=30)


async def test_a_mailer_error_is_stored_but_a_stale_claim_is_not_overwritten(
    storage: Storage,
) -> None:
    """A worker whose lease was taken over must not reschedule the other worker's claim."""

    class SlowFailure(Mailer):
        def __init__(self, clock: Clock) -> None:
            self._clock = clock

        async def send(self, message: Mail) -> None:
            async with storage.write() as conn:  # meanwhile another worker claimed it
                await conn.execute("UPDATE _outbox SET claimed_until = 'someone else'")
            raise MailError("421 4.4.2 timeout")

        async def aclose(self) -> None:
            return None

    clock = Clock()
    await queue(storage, mail(1))
    await OutboxWorker(storage, SlowFailure(clock), clock=clock).run_once()
    [row] = await rows(storage)
    assert row["claimed_until"] == "someone else" and row["last_error"] is None


async def test_stopping_mid_batch_releases_the_rest_of_the_claim(storage: Storage) -> None:
    stop = asyncio.Event()

    class StopsAfterOne(Recording):
        async def send(self, message: Mail) -> None:
            await super().send(message)
            stop.set()  # shutdown begins while the first mail is being sent

    mailer = StopsAfterOne()
    await queue(storage, mail(1), mail(2), mail(3))
    async with asyncio.timeout(5):
        await OutboxWorker(storage, mailer).run(stop)
    assert [item.recipient for item in mailer.sent] == ["user1@example.com"]
    assert [(row["attempts"], row["claimed_until"]) for row in await rows(storage)][1:] == [
        (0, None),
        (0, None),
    ]
