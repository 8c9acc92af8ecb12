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
    Migration(
        2,
        "accounts",
        (
            "DROP TABLE _admin_tokens",
            "DROP TABLE _admins",
            """CREATE TABLE _credentials (
                user_id TEXT PRIMARY KEY,
                password_hash TEXT NOT NULL,
                updated TEXT NOT NULL
            )""",
            """CREATE TABLE _sessions (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                device TEXT NOT NULL,
                user_agent TEXT NOT NULL,
                ip TEXT NOT NULL,
                created TEXT NOT NULL,
                last_used TEXT NOT NULL,
                expires TEXT NOT NULL,
                revoked TEXT
            )""",
            "CREATE INDEX _sessions_user ON _sessions (user_id)",
            """CREATE TABLE _refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES _sessions (id) ON DELETE CASCADE,
                created TEXT NOT NULL,
                used TEXT
            )""",
            "CREATE INDEX _refresh_tokens_session ON _refresh_tokens (session_id)",
            """CREATE TABLE _one_time_tokens (
                token_hash TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                purpose TEXT NOT NULL,
                email TEXT NOT NULL,
                created TEXT NOT NULL,
                expires TEXT NOT NULL,
                used TEXT
            )""",
            "CREATE INDEX _one_time_tokens_user ON _one_time_tokens (user_id)",
            """CREATE TABLE _identities (
                provider TEXT NOT NULL,
                subject TEXT NOT NULL,
                user_id TEXT NOT NULL,
                created TEXT NOT NULL,
                PRIMARY KEY (provider, subject)
            )""",
            "CREATE INDEX _identities_user ON _identities (user_id)",
            """CREATE TABLE _outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                recipient TEXT NOT NULL,
                subject TEXT NOT NULL,
                body TEXT NOT NULL,
                created TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt TEXT NOT NULL,
                claimed_until TEXT,
                sent TEXT,
                last_error TEXT
            )""",
            "CREATE INDEX _outbox_pending ON _outbox (sent, next_attempt)",
        ),
    ),
    Migration(
        3,
        "change log: record states, epoch and floor",
        (
            "ALTER TABLE _changes ADD COLUMN record TEXT",
            "ALTER TABLE _changes ADD COLUMN before TEXT",
            """CREATE TABLE _log (
                only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
                epoch TEXT NOT NULL,
                floor INTEGER NOT NULL
            )""",
            "INSERT INTO _log (only_row, epoch, floor) VALUES (1, lower(hex(randomblob(8))), 0)",
        ),
    ),
)
