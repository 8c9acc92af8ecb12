"""The change log keeps ``change_retention_seconds`` of changes; older ones are pruned.

A cursor from before the pruned floor gets ``resync_required`` (sync and realtime): its
client syncs again from scratch. Instances of the ``worker`` role (and ``all``) prune,
every ``PRUNE_EVERY_SECONDS``; the deletes are idempotent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from roost.records.fields import format_datetime
from roost.storage.base import Storage

PRUNE_EVERY_SECONDS = 3600.0


async def prune(storage: Storage, retention_seconds: int) -> int:
    """Delete the changes older than the retention; how many went."""
    cutoff = datetime.now(UTC) - timedelta(seconds=retention_seconds)
    return await storage.prune_changes(format_datetime(cutoff))
