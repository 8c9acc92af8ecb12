"""The change log keeps ``change_retention_seconds`` of changes; older ones are pruned.

A cursor from before the pruned floor gets ``resync_required`` (sync and realtime): its
client syncs again from scratch. Every instance prunes; the deletes are idempotent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from roost.records.fields import format_datetime
from roost.storage.base import Storage

PRUNE_EVERY_SECONDS = 3600.0

log = structlog.get_logger("roost.realtime")


async def prune_periodically(storage: Storage, retention_seconds: int, stop: asyncio.Event) -> None:
    """Prune at start and every ``PRUNE_EVERY_SECONDS`` until ``stop`` is set."""
    while not stop.is_set():
        cutoff = datetime.now(UTC) - timedelta(seconds=retention_seconds)
        try:
            pruned = await storage.prune_changes(format_datetime(cutoff))
        except Exception as exc:  # the database away: try again next time
            log.warning("change_prune_failed", error=f"{type(exc).__name__}: {exc}")
        else:
            if pruned:
                log.info("changes_pruned", count=pruned)
        try:
            async with asyncio.timeout(PRUNE_EVERY_SECONDS):
                await stop.wait()
        except TimeoutError:
            pass
