"""Versioned schema migrations: each runs once, in order, inside one write transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from roost.storage.base import Connection

LEDGER = (
    "CREATE TABLE IF NOT EXISTS _migrations"
    " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


async def migrate(conn: Connection, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations ``conn`` has not seen yet; return their versions.

    ``conn`` is a write transaction, so a migration half-applied by a crash is rolled back
    and another instance starting at the same time waits, then finds nothing to do.
    """
    await conn.execute(LEDGER)
    done = {row["version"] for row in await conn.fetch_all("SELECT version FROM _migrations")}
    applied = []
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version in done:
            continue
        for statement in migration.statements:
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO _migrations (version, name, applied) VALUES (?, ?, ?)",
            (migration.version, migration.name, datetime.now(UTC).isoformat()),
        )
        applied.append(migration.version)
    return applied
