"""The parts one Roost instance runs on; the only place URLs become backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from roost.records.collections import Collections
from roost.records.service import Records
from roost.settings import Settings
from roost.storage.base import Storage, open_storage


@dataclass(frozen=True, slots=True)
class Components:
    settings: Settings
    storage: Storage
    collections: Collections
    records: Records


@asynccontextmanager
async def open_components(settings: Settings) -> AsyncIterator[Components]:
    """Open every backend named in ``settings``; close them all when the block ends."""
    settings = settings.with_secret()
    storage = open_storage(settings)
    try:
        await storage.open()
        yield Components(
            settings=settings,
            storage=storage,
            collections=Collections(storage),
            records=Records(storage, settings),
        )
    finally:
        await storage.aclose()
