"""The parts one Roost instance runs on; the only place URLs become backends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from roost.auth.cleanup import purge_expired
from roost.auth.identities import IdentitySignIn
from roost.auth.oidc import IdentityVerifier
from roost.auth.recovery import Recovery
from roost.auth.service import Accounts
from roost.auth.tokens import AccessTokens
from roost.broker.base import Broker, open_broker
from roost.cache.base import open_cache
from roost.mail.base import Mailer, open_mailer
from roost.mail.outbox import OutboxWorker
from roost.metrics import Metrics
from roost.ratelimit.base import RateLimiter, open_ratelimiter
from roost.realtime.retention import PRUNE_EVERY_SECONDS, prune
from roost.realtime.service import Realtime
from roost.records.cache import RecordCache
from roost.records.collections import Collections
from roost.records.service import Records
from roost.settings import Settings
from roost.storage.base import Storage, StorageError, open_storage

if TYPE_CHECKING:
    from roost.tracing import Tracing

log = structlog.get_logger("roost")

PURGE_EVERY_SECONDS = 3600.0
"""How often expired sessions and one-time tokens are deleted (``auth.cleanup``)."""
FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 5.0
"""Start-up tries the database again after 0.5 s, then twice as long each time up to this."""


@dataclass(frozen=True, slots=True)
class Components:
    settings: Settings
    storage: Storage
    collections: Collections
    records: Records
    tokens: AccessTokens
    accounts: Accounts
    identities: IdentitySignIn
    recovery: Recovery
    ratelimiter: RateLimiter
    outbox: OutboxWorker
    broker: Broker
    realtime: Realtime
    record_cache: RecordCache | None
    """None when nothing is cached (``cache_url`` ``none``, or an in-process cache with
    several workers)."""
    metrics: Metrics
    tracing: Tracing | None
    """Spans of requests and statements; None unless ``otel_exporter_otlp_endpoint`` is set."""


def access_tokens(settings: Settings) -> AccessTokens:
    assert settings.secret_key is not None, "call Settings.with_secret() first"
    return AccessTokens(
        settings.secret_key.get_secret_value(),
        [key.get_secret_value() for key in settings.previous_secret_keys],
        settings.access_token_ttl_seconds,
    )


@asynccontextmanager
async def open_components(settings: Settings) -> AsyncIterator[Components]:
    """Open every backend named in ``settings``; close them all when the block ends.

    In the background for the block's duration: the cache's replay of invalidations that
    could not be delivered; with the ``realtime`` role (or ``all``), the realtime feed
    following the change log; with ``worker`` (or ``all``), the outbox worker (queued
    mail), the pruning of old changes and of expired sign-in state.
    """
    settings = settings.with_secret()
    async with AsyncExitStack() as stack:
        tracing = _open_tracing(settings, stack)
        storage = await _open_storage(settings)
        stack.push_async_callback(storage.aclose)
        collections = Collections(storage)
        await collections.ensure_builtin()
        metrics = Metrics()
        metrics.watch_storage(storage)
        await stack.enter_async_context(metrics.running())
        record_cache = await _open_record_cache(settings, storage, metrics, stack)
        records = Records(storage, settings, record_cache)
        tokens = access_tokens(settings)
        accounts = Accounts(storage, records, tokens, settings)
        identities = IdentitySignIn(
            storage, accounts, IdentityVerifier(settings.identity_providers())
        )
        stack.push_async_callback(identities.aclose)
        ratelimiter = open_ratelimiter(settings.ratelimit_url)
        stack.push_async_callback(ratelimiter.aclose)
        mailer: Mailer = open_mailer(settings)
        stack.push_async_callback(mailer.aclose)
        outbox = OutboxWorker(storage, mailer)
        works = settings.role in ("worker", "all")
        if works:
            await stack.enter_async_context(_running("outbox", outbox.run, outbox.notify))
            metrics.watch_outbox(outbox)
        broker = open_broker(settings.broker_url)
        stack.push_async_callback(broker.aclose)
        await broker.open()
        storage.on_commit(broker.publish)
        realtime = Realtime(storage, broker, tokens, settings)
        metrics.watch_realtime(realtime)
        if settings.role in ("realtime", "all"):
            await stack.enter_async_context(realtime.running())
        if works:
            retention = settings.change_retention_seconds
            pruning = _every(PRUNE_EVERY_SECONDS, lambda: prune(storage, retention), "changes")
            await stack.enter_async_context(_running("cleanup-changes", pruning))
            cleaning = _every(PURGE_EVERY_SECONDS, lambda: purge_expired(storage), "sign_ins")
            await stack.enter_async_context(_running("cleanup-sign_ins", cleaning))
        yield Components(
            settings=settings,
            storage=storage,
            collections=collections,
            records=records,
            tokens=tokens,
            accounts=accounts,
            identities=identities,
            recovery=Recovery(storage, accounts, settings, outbox.notify),
            ratelimiter=ratelimiter,
            outbox=outbox,
            broker=broker,
            realtime=realtime,
            record_cache=record_cache,
            metrics=metrics,
            tracing=tracing,
        )


async def _open_storage(settings: Settings) -> Storage:
    """The database, connected and migrated; while it does not answer (it is starting, or
    failing over), tried again with backoff for up to ``startup_timeout_seconds``."""
    deadline = time.monotonic() + settings.startup_timeout_seconds
    delay = FIRST_RETRY_SECONDS
    while True:
        storage = open_storage(settings)
        try:
            await storage.open()
            return storage
        except StorageError as exc:
            await storage.aclose()
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("database_unavailable", error=str(exc), retry_in=round(delay, 1))
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, LAST_RETRY_SECONDS)


def _open_tracing(settings: Settings, stack: AsyncExitStack) -> Tracing | None:
    """Tracing, when a collector is configured: only then is OpenTelemetry imported. Closed
    last, so that it exports the spans of everything closed before."""
    if not settings.otel_exporter_otlp_endpoint:
        return None
    from roost.tracing import Tracing

    tracing = Tracing(settings)
    stack.push_async_callback(tracing.aclose)
    return tracing


async def _open_record_cache(
    settings: Settings, storage: Storage, metrics: Metrics, stack: AsyncExitStack
) -> RecordCache | None:
    """The record cache named by ``cache_url``, told of every commit, its pending
    invalidations replayed in the background; None when nothing is to be cached."""
    if settings.cache_url == "none":
        return None
    cache = open_cache(settings.cache_url)
    if not cache.shared and settings.workers > 1:
        return None  # each worker would miss the others' writes (see Settings.cache_url)
    if not cache.shared and not settings.database_url.startswith("sqlite:"):
        log.warning(
            "cache_in_process_on_shared_database",
            detail="correct only while this is the database's only instance;"
            " several instances share a Redis cache",
        )
    stack.push_async_callback(cache.aclose)
    observe = metrics.cache_seconds.labels(cache.backend).observe
    record_cache = RecordCache(cache, settings.cache_ttl_seconds, observe=observe)
    storage.after_commit(record_cache.invalidate)
    metrics.watch_cache(record_cache, cache.backend)
    await stack.enter_async_context(_running("cache-replay", record_cache.replay))
    return record_cache


def _every(
    seconds: float, job: Callable[[], Awaitable[int]], deletes: str
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A background clean-up: ``job()`` now and every ``seconds`` until stopped, what it
    deleted logged as ``<deletes>_deleted``; a failure (the database away) is logged and
    tried again next time."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                count = await job()
            except Exception as exc:  # whatever the database raised: next time
                log.warning(f"{deletes}_cleanup_failed", error=f"{type(exc).__name__}: {exc}")
            else:
                if count:
                    log.info(f"{deletes}_deleted", count=count)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await stop.wait()

    return run


@asynccontextmanager
async def _running(
    name: str,
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    wake: Callable[[], None] = lambda: None,
) -> AsyncIterator[None]:
    """Run ``run(stop)`` as the task ``roost-<name>`` for the block's duration; at its end
    set ``stop``, ``wake()`` the task and wait for it."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop), name=f"roost-{name}")
    try:
        yield
    finally:
        stop.set()
        wake()
        await task
