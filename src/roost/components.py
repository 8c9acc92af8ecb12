"""The parts one Roost instance runs on; the only place URLs become backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from roost.auth.service import Accounts
from roost.auth.tokens import AccessTokens
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
    tokens: AccessTokens
    accounts: Accounts


def access_tokens(settings: Settings) -> AccessTokens:
    assert settings.secret_key is not None, "call Settings.with_secret() first"
    return AccessTokens(
        settings.secret_key.get_secret_value(),
        [key.get_secret_value() for key in settings.previous_secret_keys],
        settings.access_token_ttl_seconds,
    )


@asynccontextmanager
async def open_components(settings: Settings) -> AsyncIterator[Components]:
    """Open every backend named in ``settings``; close them all when the block ends."""
    settings = settings.with_secret()
    storage = open_storage(settings)
    try:
        await storage.open()
        collections = Collections(storage)
        await collections.ensure_builtin()
        records = Records(storage, settings)
        tokens = access_tokens(settings)
        yield Components(
            settings=settings,
            storage=storage,
            collections=collections,
            records=records,
            tokens=tokens,
            accounts=Accounts(storage, records, tokens, settings),
        )
    finally:
        await storage.aclose()
