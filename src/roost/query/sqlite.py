"""The SQLite dialect (JSON1 functions, built into every supported SQLite).

Table layout: ``id TEXT, owner TEXT NULL, created TEXT, updated TEXT,
version INTEGER, data TEXT`` where ``data`` is the JSON object of client fields.

``~`` calls the SQL function ``roost_icontains``, which is Python code shared with
the evaluator. **Register it on every connection** before running a compiled filter:
``SQLiteDialect.register(conn)`` for a ``sqlite3.Connection``, or, for aiosqlite,
``for name, n, fn in dialect.functions(): await db.create_function(name, n, fn,
deterministic=True)``.

Strings in ``data`` must not contain U+0000: SQLite's JSON functions cut a string at
the first NUL, so such values would compare differently in SQL and in Python.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from roost.query.ast import SYSTEM_FIELDS, Path, Scalar
from roost.query.evaluate import Kind, icontains
from roost.query.sql import Dialect, SQLFunction

_JSON_TYPES: dict[Kind, str] = {
    "bool": "IN ('true', 'false')",
    "number": "IN ('integer', 'real')",
    "string": "= 'text'",
    "array": "= 'array'",
    "object": "= 'object'",
    "null": "= 'null'",
}
_SAFE_JSON_PATH = re.compile(r"\$(\.[A-Za-z][A-Za-z0-9_]*|\[[0-9]+\])+")


def sql_icontains(haystack: object, needle: object) -> int:
    """``roost_icontains(a, b)``: 1 iff both are text and ``b`` occurs in ``a`` ignoring case."""
    if isinstance(haystack, str) and isinstance(needle, str):
        return int(icontains(haystack, needle))
    return 0


SQLITE_FUNCTIONS: tuple[tuple[str, int, SQLFunction], ...] = (
    ("roost_icontains", 2, sql_icontains),
)
"""SQL functions compiled filters call: ``(name, number of arguments, function)``."""


RECORD_JSON = (
    "'{' || "
    + " || ',' || ".join(
        f"'\"{name}\":' || json_quote({name})" for name in ("id", "owner", "created", "updated")
    )
    + " || ',\"version\":' || version"
    + " || CASE WHEN data = '{}' THEN '}' ELSE ',' || substr(data, 2) END"
)
"""A record row's public JSON: the data column holds orjson's compact text of an object,
so this is the system fields followed by that text's members, byte for byte what
``orjson.dumps`` of the record gives."""


class SQLiteDialect(Dialect):
    """SQLite: ``?`` placeholders, ``json_extract``/``json_type``/``json_each``."""

    true_sql = "1"
    false_sql = "0"
    data_column = "data"

    def record_json_sql(self) -> str:
        return RECORD_JSON

    @staticmethod
    def register(connection: sqlite3.Connection) -> None:
        """Install the SQL functions compiled filters use; needed on every connection."""
        for name, arity, function in SQLiteDialect().functions():
            connection.create_function(name, arity, function, deterministic=True)

    def placeholder(self, index: int) -> str:
        return "?"

    def json_path(self, path: Path) -> str:
        """The quoted JSON path literal of a data path: ``'$.items[0].name'``."""
        if not path.segments or path.segments[0] in SYSTEM_FIELDS:
            raise ValueError(f"not a data path: {path.segments!r}")
        text = "$" + "".join(
            f"[{segment}]" if isinstance(segment, int) else f".{segment}"
            for segment in path.segments
        )
        # Paths from the parser always match; this guards hand-built trees.
        if _SAFE_JSON_PATH.fullmatch(text) is None or isinstance(path.segments[0], int):
            raise ValueError(f"invalid field path: {path.segments!r}")
        return f"'{text}'"

    def data_sql(self, path: Path) -> str:
        return f"json_extract({self.data_column}, {self.json_path(path)})"

    def functions(self) -> Sequence[tuple[str, int, SQLFunction]]:
        return SQLITE_FUNCTIONS

    def null_test(self, path: Path) -> str:
        return f"{self.field_sql(path)} IS NULL"

    def kind_test(self, path: Path, kind: Kind) -> str:
        return f"json_type({self.data_column}, {self.json_path(path)}) {_JSON_TYPES[kind]}"

    def array_contains(self, path: Path, kind: Kind, value_sql: str | None) -> str:
        # "value IN (SELECT ...)" rather than a correlated EXISTS: inside the
        # subquery an unqualified "id" would name json_each's own id column.
        source = f"json_each({self.data_column}, {self.json_path(path)})"
        if value_sql is None:
            return f"EXISTS (SELECT 1 FROM {source} WHERE type = 'null')"
        return f"{value_sql} IN (SELECT value FROM {source} WHERE type {_JSON_TYPES[kind]})"

    def icontains(self, haystack_sql: str, needle_sql: str) -> str:
        return f"roost_icontains({haystack_sql}, {needle_sql})"

    def bind(self, value: Scalar) -> object:
        return int(value) if isinstance(value, bool) else value

    def is_not_true(self, condition: str) -> str:
        return f"(({condition}) IS NOT 1)"

    def null_safe_equal(self, left: str, right: str) -> str:
        return f"{left} IS {right}"
