"""Each instance follows the change log and hands every change to its hub.

The feed reads the log from its own position whenever the broker says it has grown, and
on a timer in case a message was lost or no broker reaches this process: every
``realtime_poll_seconds`` (several worker processes on the embedded default, or the
broker down), every ``TRUSTED_POLL_SECONDS`` while a shared broker is healthy. So events
come from the log, in its order, whatever the broker does.
"""

from __future__ import annotations

import asyncio

import structlog

from roost.broker.base import Broker
from roost.errors import NotFound
from roost.realtime.changes import Changed
from roost.realtime.hub import Hub
from roost.records import collections
from roost.records.collections import Collection
from roost.storage.base import Storage

BATCH = 500
"""Changes read per query."""
TRUSTED_POLL_SECONDS = 1.0
RETRY_SECONDS = (0.1, 5.0)
"""Backoff after a failed read (the database down): first and longest wait."""

log = structlog.get_logger("roost.realtime")


class Feed:
    def __init__(self, storage: Storage, broker: Broker, hub: Hub, poll_seconds: float) -> None:
        self.position = 0
        """The last change read and dispatched."""
        self._storage = storage
        self._broker = broker
        self._hub = hub
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        broker.listen(self._wake.set)

    async def start(self) -> None:
        """Begin at the log's head: changes made before no subscriber can have asked for."""
        self.position = (await self._storage.log_state()).head

    def wake(self) -> None:
        self._wake.set()

    def _interval(self) -> float:
        if self._broker.shared and self._broker.healthy:
            return TRUSTED_POLL_SECONDS
        return self._poll_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log until ``stop`` is set; a failing database is retried, never fatal."""
        delay = RETRY_SECONDS[0]
        while not stop.is_set():
            try:
                async with asyncio.timeout(self._interval()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.catch_up()
            except Exception as exc:  # the database away: log, wait, read again
                log.warning("realtime_feed_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_SECONDS[1])
            else:
                delay = RETRY_SECONDS[0]

    async def catch_up(self) -> None:
        """Read and dispatch every change after ``position``."""
        while True:
            changes = await self._storage.changes_since(self.position, None, BATCH)
            watched = {c.collection for c in changes if self._hub.watches(c.collection)}
            definitions = await self._definitions(watched)
            for change in changes:
                collection = definitions.get(change.collection)
                if collection is not None and self._hub.watches(change.collection):
                    self._hub.dispatch(Changed(change), collection)
                self.position = change.position
            if len(changes) < BATCH:
                return
            await asyncio.sleep(0)  # let requests run between batches

    async def _definitions(self, names: set[str]) -> dict[str, Collection]:
        found = {}
        if names:
            async with self._storage.read() as conn:
                for name in names:
                    try:
                        found[name] = await collections.load(conn, name)
                    except NotFound:  # dropped since: its changes went with it
                        pass
        return found
