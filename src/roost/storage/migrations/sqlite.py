"""Roost's own tables on SQLite. Collection tables are made by ``SQLiteStorage``."""

from __future__ import annotations

from roost.storage.migrations.runner import Migration

MIGRATIONS = (
    Migration(
        1,
        "initial",
        (
            """CREATE TABLE _collections (
                name TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                created TEXT NOT NULL,
                updated TEXT NOT NULL,
                version INTEGER NOT NULL
            )""",
            """CREATE TABLE _changes (
                position INTEGER PRIMARY KEY AUTOINCREMENT,
                collection TEXT NOT NULL,
                record_id TEXT NOT NULL,
                op TEXT NOT NULL,
                version INTEGER NOT NULL,
                owner TEXT,
                at TEXT NOT NULL
            )""",
            "CREATE INDEX _changes_collection ON _changes (collection, position)",
            """CREATE TABLE _idempotency (
                scope TEXT NOT NULL,
                key TEXT NOT NULL,
                request_hash TEXT NOT NULL,
                status INTEGER NOT NULL,
                headers TEXT NOT NULL,
                body BLOB NOT NULL,
                created TEXT NOT NULL,
                PRIMARY KEY (scope, key)
            )""",
            "CREATE INDEX _idempotency_created ON _idempotency (created)",
            """CREATE TABLE _admins (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                created TEXT NOT NULL
            )""",
            """CREATE TABLE _admin_tokens (
                token_hash TEXT PRIMARY KEY,
                admin_id TEXT NOT NULL REFERENCES _admins (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                created TEXT NOT NULL
            )""",
        ),
    ),
)
