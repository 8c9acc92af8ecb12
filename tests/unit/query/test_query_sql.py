from __future__ import annotations

import re
import sqlite3
from typing import Any

import pytest

from roost.query.ast import Compare, Literal, Path
from roost.query.parser import parse
from roost.query.sql import compile_filter, compile_filter_cached
from roost.query.sqlite import SQLiteDialect

DIALECT = SQLiteDialect()


@pytest.fixture
def conn() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    SQLiteDialect.register(connection)
    connection.execute(
        "CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT, created TEXT NOT NULL,"
        " updated TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL)"
    )
    for name, path in [("t_title", "title"), ("t_price", "price"), ("t_owner", "owner")]:
        connection.execute(f"CREATE INDEX {name} ON t ({DIALECT.field_sql(path)})")
    return connection


def plan(conn: sqlite3.Connection, text: str, context: dict[str, Any] | None = None) -> str:
    sql, params = compile_filter(parse(text), DIALECT, context)
    rows = conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM t WHERE {sql}", params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ('title = "x"', "t_title"),
        ('title = "x" && n = 1', "t_title"),
        ('n != 1 && title = "x"', "t_title"),
        ('title > "m"', "t_title"),
        ('title <= "m"', "t_title"),
        ("price > 10", "t_price"),
        ("price < 10.5 && status = 'open'", "t_price"),
        ("owner = @auth.id", "t_owner"),
        ("owner = 'u1' && title ~ 'x'", "t_owner"),
        ("owner = null", "t_owner"),
        ("id = 'r1'", "sqlite_autoindex_t_1"),
        ("id = 'r1' && price > 3", "sqlite_autoindex_t_1"),
    ],
)
def test_top_level_conjuncts_use_indexes(conn: sqlite3.Connection, text: str, index: str) -> None:
    assert re.search(f"USING (COVERING )?INDEX {index} ", plan(conn, text, {"auth.id": "u1"}))


def test_field_sql_matches_index_expressions() -> None:
    assert DIALECT.field_sql("title") == "json_extract(data, '$.title')"
    assert DIALECT.field_sql(Path(("items", 0, "name"))) == "json_extract(data, '$.items[0].name')"
    assert DIALECT.field_sql("author.name") == "json_extract(data, '$.author.name')"
    for name in ["id", "owner", "created", "updated", "version"]:
        assert DIALECT.field_sql(name) == name


def test_hand_built_paths_are_checked() -> None:
    for bad in [("x'; DROP TABLE t; --",), ("id", "x"), (0,), ()]:
        with pytest.raises(ValueError):
            compile_filter(Compare("=", Path(bad), Literal(1)), DIALECT)


def test_values_are_bound_never_inlined() -> None:
    evil = "x' OR 1=1; DROP TABLE t; --"
    sql, params = compile_filter(
        parse(f'title = "{evil}" || owner = @auth.id || a = @request.data.b'),
        DIALECT,
        {"auth.id": evil, "request.data": {"b": evil}},
    )
    assert evil not in sql
    assert params == [evil, evil, evil]
    assert sql.count("?") == 3


def test_shapes() -> None:
    def compiled(text: str) -> tuple[str, list[object]]:
        return compile_filter(parse(text), DIALECT, {"auth.id": "u1", "request.data": {"l": [1]}})

    assert compiled('title = "x"') == (
        "(json_type(data, '$.title') = 'text' AND json_extract(data, '$.title') = ?)",
        ["x"],
    )
    assert compiled("done = true") == (
        "(json_type(data, '$.done') IN ('true', 'false') AND json_extract(data, '$.done') = ?)",
        [1],
    )
    assert compiled("a = null") == ("json_extract(data, '$.a') IS NULL", [])
    assert compiled("owner = @auth.id") == ("owner = ?", ["u1"])
    assert compiled("owner != @auth.id") == ("((owner = ?) IS NOT 1)", ["u1"])
    assert compiled("id = 1") == ("0", [])
    assert compiled("1 = 1.0") == ("1", [])
    assert compiled("a in []") == ("0", [])
    assert compiled("!(a in [])") == ("1", [])
    assert compiled("version ?= 1") == ("0", [])
    assert compiled("@request.data.l ?= 1") == ("1", [])
    assert compiled("tags ?= 'x'") == (
        "(json_type(data, '$.tags') = 'array' AND ? IN (SELECT value FROM"
        " json_each(data, '$.tags') WHERE type = 'text'))",
        ["x"],
    )
    assert compiled("title ~ 'É'") == (
        "(json_type(data, '$.title') = 'text' AND roost_icontains(json_extract(data,"
        " '$.title'), ?))",
        ["É"],
    )


def test_placeholders_follow_text_order() -> None:
    class Dollar(SQLiteDialect):
        def placeholder(self, index: int) -> str:
            return f"${index}"

    sql, params = compile_filter(parse("a = 'x' && (b < 2 || c in ['y', 3])"), Dollar())
    positions = [sql.index(f"${n}") for n in range(1, 5)]
    assert positions == sorted(positions)
    assert params == ["x", 2, "y", 3]


def test_icontains_function_registered(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t VALUES ('r1', NULL, 'c', 'u', 1, ?)", ['{"title": "ÉCOLE"}'])
    sql, params = compile_filter(parse("title ~ 'école'"), DIALECT)
    assert conn.execute(f"SELECT id FROM t WHERE {sql}", params).fetchall() == [("r1",)]
    assert [name for name, _, _ in DIALECT.functions()] == ["roost_icontains"]


def test_negation_never_leaks_null(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t VALUES ('r1', NULL, 'c', 'u', 1, '{}')")
    for text in ["!(a = 1)", "!(owner = 'u1')", "!(a > 1 && b < 2)", "!(a ~ 'x' || b ?= 1)"]:
        sql, params = compile_filter(parse(text), DIALECT)
        assert conn.execute(f"SELECT id FROM t WHERE {sql}", params).fetchall() == [("r1",)]


CACHED = [
    ("owner = @auth.id", {"auth.id": "a"}),
    ("owner = @auth.id", {"auth.id": "b"}),
    ("owner = @auth.id", {"auth.id": None}),
    ("@auth.id != null && @auth.verified = true", {"auth.id": "a", "auth.verified": True}),
    ("@auth.id != null && @auth.verified = true", {"auth.id": "a", "auth.verified": False}),
    ("@auth.role = 'admin' || owner = @auth.id", {"auth.id": "a", "auth.role": "user"}),
    ("created < @now", {"now": "2026-01-01T00:00:00.000Z"}),
    ("created < @now", {"now": "2026-01-02T00:00:00.000Z"}),
    ("title = @request.data.title", {"request.data": {"title": "x"}}),
    ("title = @request.data.title", {"request.data": {"title": 3}}),
]


@pytest.mark.parametrize(("text", "context"), CACHED)
def test_a_remembered_compilation_is_the_fresh_one(text: str, context: dict[str, Any]) -> None:
    """Each row runs after the rows before it have filled the cache with other contexts."""
    for _ in range(2):
        assert compile_filter_cached(parse(text), DIALECT, context) == compile_filter(
            parse(text), DIALECT, context
        )
