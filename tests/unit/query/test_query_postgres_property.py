"""The SQL property tests again, on a real PostgreSQL (``postgres_url``, asyncpg):
compiled PostgreSQL SQL selects exactly what the evaluator accepts, keyset pages over
PostgreSQL follow SQLite's ``ORDER BY``, ``roost_lower`` is ``str.lower``, and an index
on ``field_sql(path)`` serves the filters it should.

Set ROOST_PG_QUERY_EXAMPLES (default 100) to run more examples.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from roost.query.ast import Compare, CompareOp, Expr, ListValue, Literal, Not, Path
from roost.query.evaluate import evaluate
from roost.query.limits import MAX_DEPTH
from roost.query.parser import parse
from roost.query.postgres import PostgresDialect, setup_sql
from roost.query.render import render
from roost.query.sort import keyset_sql, order_by_sql, parse_sort, sort_values_sql, with_tiebreaker
from roost.query.sql import compile_filter
from roost.query.sqlite import SQLiteDialect
from unit.query.test_query_sort import records as sort_records
from unit.query.test_query_sort import sort_specs
from unit.query.test_query_sql_property import (
    CORPUS,
    WIDE,
    draw_world,
    flat,
    nesting,
)

EXAMPLES = int(os.environ.get("ROOST_PG_QUERY_EXAMPLES", "100"))
T = TypeVar("T")

TABLE = (
    'CREATE TABLE t (id TEXT COLLATE "C" PRIMARY KEY, owner TEXT COLLATE "C",'
    ' created TEXT COLLATE "C" NOT NULL, updated TEXT COLLATE "C" NOT NULL,'
    " version BIGINT NOT NULL, data JSONB NOT NULL)"
)
COLUMNS = ["id", "owner", "created", "updated", "version", "data"]
DIALECTS = [PostgresDialect(), PostgresDialect.for_collation("C")]
PG_QUOTED = re.compile(r"'[^']*'")
PG_ALLOWED_QUOTED = re.compile(
    r"'\{([A-Za-z][A-Za-z0-9_]*|[0-9]+)(,([A-Za-z][A-Za-z0-9_]*|[0-9]+))*\}'|'\{\}'"
    r"|'(null|boolean|number|string|array|object|\[null\])'"
)


class Database:
    """One asyncpg connection driven from synchronous (hypothesis) tests."""

    def __init__(self, url: str) -> None:
        self.runner = asyncio.Runner()
        self.conn: asyncpg.Connection = self.runner.run(asyncpg.connect(url))
        for statement in setup_sql():
            self.run(self.conn.execute(statement))
        self.run(self.conn.execute(TABLE))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def close(self) -> None:
        try:
            self.run(self.conn.close())
        finally:
            self.runner.close()

    def load(self, rows: list[dict[str, Any]], width: int = 0) -> None:
        """Replace the table's rows by ``rows`` (ids ``r0``, ``r1``…, zero-padded to ``width``)."""
        self.run(self.conn.execute("DELETE FROM t"))
        self.run(
            self.conn.copy_records_to_table(
                "t",
                columns=COLUMNS,
                records=[
                    (
                        f"r{i:0{width}}",
                        row["owner"],
                        row["created"],
                        row.get("updated", row["created"]),  # the sort tests have none
                        row["version"],
                        json.dumps(row["data"]),
                    )
                    for i, row in enumerate(rows)
                ],
            )
        )

    def ids(self, sql: str, params: list[object]) -> set[str]:
        found = self.run(self.conn.fetch(f"SELECT id FROM t WHERE {sql}", *params))
        return {row[0] for row in found}

    def fetch(self, sql: str, *params: object) -> list[asyncpg.Record]:
        return self.run(self.conn.fetch(sql, *params))


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    try:
        yield database
    finally:
        database.close()


def without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\x01")
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    if isinstance(value, dict):
        return {key: without_nul(item) for key, item in value.items()}
    return value


def check_sql(sql: str, params: list[object]) -> None:
    for quoted in PG_QUOTED.findall(sql):
        assert PG_ALLOWED_QUOTED.fullmatch(quoted), (quoted, sql)
    numbers = [int(n) for n in re.findall(r"\$([0-9]+)", sql)]
    assert sorted(set(numbers)) == list(range(1, len(params) + 1)), sql
    assert all(isinstance(param, str) for param in params), params


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_pg_sql_selects_what_evaluator_accepts(db: Database, data: st.DataObject) -> None:
    world = draw_world(data)
    rows = CORPUS + data.draw(world.records, label="rows")
    expr = data.draw(world.expressions, label="expr")
    context: dict[str, Any] = data.draw(world.contexts, label="context")
    assume(nesting(expr) <= MAX_DEPTH)
    assert parse(render(expr)) == expr
    expected = {record["id"] for record in flat(rows) if evaluate(expr, record, context)}
    db.load(rows)
    for dialect in DIALECTS:
        sql, params = compile_filter(expr, dialect, context)
        check_sql(sql, params)
        assert db.ids(sql, params) == expected, (render(expr), dialect.c_collation, sql, params)
        assert db.ids(f"({sql}) AND TRUE", params) == expected
    event(f"matched {'none' if not expected else 'all' if len(expected) == len(rows) else 'some'}")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), negate=st.booleans())
def test_pg_each_comparison_over_many_records(
    db: Database, data: st.DataObject, negate: bool
) -> None:
    world = draw_world(data)
    rows = CORPUS + data.draw(world.records, label="rows")
    comparison = data.draw(world.comparisons, label="comparison")
    context: dict[str, Any] = data.draw(world.contexts, label="context")
    expr: Expr = Not(comparison) if negate else comparison
    expected = {record["id"] for record in flat(rows) if evaluate(expr, record, context)}
    db.load(rows)
    for dialect in DIALECTS:
        sql, params = compile_filter(expr, dialect, context)
        assert db.ids(sql, params) == expected, (render(expr), dialect.c_collation, sql, params)
    event(f"matched {'none' if not expected else 'all' if len(expected) == len(rows) else 'some'}")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    values=st.lists(WIDE.json_values, min_size=1, max_size=8),
    literal=WIDE.literal_values,
    op=st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "~", "!~", "?="]),
)
def test_pg_single_field_comparisons(
    db: Database, values: list[Any], literal: Any, op: CompareOp
) -> None:
    """Dense check of one data field against one literal, every kind against every kind."""
    rows = [
        {"owner": None, "created": "c", "updated": "u", "version": 1, "data": {"a": value}}
        for value in values
    ]
    db.load(rows)
    exprs: list[Expr] = [
        Compare(op, Path(("a",)), Literal(literal)),
        Compare(op, Literal(literal), Path(("a",))),
        Not(Compare(op, Path(("a",)), Literal(literal))),
        Compare("in", Path(("a",)), ListValue((Literal(literal),))),
        Compare(op, Path(("a",)), Path(("a",))),
        Compare(op, Path(("a", 0)), Literal(literal)),
    ]
    for expr in exprs:
        expected = {record["id"] for record in flat(rows) if evaluate(expr, record)}
        for dialect in DIALECTS:
            sql, params = compile_filter(expr, dialect, {})
            assert db.ids(sql, params) == expected, (render(expr), sql, params)


def test_pg_paths_through_non_containers(db: Database) -> None:
    """``#>`` reads an object's key "0" for an index segment; the dialect must not."""
    rows = [
        {"owner": None, "created": "c", "updated": "c", "version": 1, "data": data}
        for data in [{"a": {"0": 5}}, {"a": [5]}, {"a": "5"}, {"a": [[5]]}, {"a": [{"b": 5}]}]
    ]
    db.load(rows)
    for text in ["a.0 = 5", "a.0.0 = 5", "a.0.b = 5", "a.b = 5", "a.0 = null", "a.0.0 != 5"]:
        expr = parse(text)
        expected = {record["id"] for record in flat(rows) if evaluate(expr, record)}
        sql, params = compile_filter(expr, PostgresDialect(), {})
        assert db.ids(sql, params) == expected, text


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rows=sort_records, spec=sort_specs, page_size=st.integers(1, 7))
def test_pg_keyset_pages_follow_sqlite_order(
    db: Database, rows: list[dict[str, Any]], spec: list[tuple[str, bool]], page_size: int
) -> None:
    """Every row once, in the order SQLite's ``ORDER BY`` gives the same data."""
    rows = without_nul(rows)  # jsonb cannot hold U+0000 (neither can records)
    keys = with_tiebreaker(parse_sort(",".join(("-" if d else "") + p for p, d in spec)))
    lite = sqlite3.connect(":memory:")
    try:
        lite.execute(
            "CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT, created TEXT NOT NULL,"
            " updated TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL)"
        )
        lite.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    f"r{i:02}",
                    r["owner"],
                    r["created"],
                    r["created"],
                    r["version"],
                    json.dumps(r["data"], ensure_ascii=False, separators=(",", ":")),
                )
                for i, r in enumerate(rows)
            ],
        )
        sqlite_order = [
            row[0]
            for row in lite.execute(
                f"SELECT id FROM t ORDER BY {order_by_sql(keys, SQLiteDialect())}"
            )
        ]
    finally:
        lite.close()

    dialect = PostgresDialect()
    db.load(rows, width=2)
    order = order_by_sql(keys, dialect)
    select = ", ".join(["id", *sort_values_sql(keys, dialect)])
    everything = [row[0] for row in db.fetch(f"SELECT id FROM t ORDER BY {order}")]
    assert everything == sqlite_order
    paged: list[str] = []
    last: list[Any] | None = None
    for _ in range(len(rows) + 2):
        where, params = ("TRUE", []) if last is None else keyset_sql(keys, last, dialect)
        page = db.fetch(
            f"SELECT {select} FROM t WHERE {where} ORDER BY {order} LIMIT {page_size}", *params
        )
        if not page:
            break
        paged.extend(row[0] for row in page)
        last = list(page[-1][1:])
    assert paged == everything
    assert len(set(paged)) == len(rows)


def test_pg_container_sort_divergence_is_as_documented(db: Database) -> None:
    """Arrays and objects rank with strings, by PostgreSQL's jsonb text (see the dialect)."""
    values: list[Any] = [None, "Z", [1, 2], "a", True, 0.5, {"b": 1, "a": 2}, "[1,!"]
    db.load(
        [
            {"owner": None, "created": "c", "updated": "c", "version": 1, "data": {"x": v}}
            for v in values
        ]
    )
    keys = with_tiebreaker(parse_sort("x"))
    got = [
        row[0]
        for row in db.fetch(f"SELECT id FROM t ORDER BY {order_by_sql(keys, PostgresDialect())}")
    ]
    # SQLite: r0, r5, r4, r1, r7 ("[1,!" < "[1,2]"), r2, r3, r6 ({"b":1,"a":2}).
    assert got == ["r0", "r5", "r4", "r1", "r2", "r7", "r3", "r6"]


def test_roost_lower_is_python_lower(db: Database) -> None:
    chars = [chr(code) for code in range(1, 0x110000) if not 0xD800 <= code < 0xE000]
    lowered = db.fetch(
        "SELECT roost_lower(x) FROM unnest($1::text[]) WITH ORDINALITY u(x, n) ORDER BY n", chars
    )
    assert [row[0] for row in lowered] == [char.lower() for char in chars]
    words = ["ΑΣ", "ΑΣΣ", "aΣ'", "aΣ'b", "Σ", "Σa", "İSTANBUL", "A\u0345Σ", "ΌΣΟΣ.", "ΑΣ\u0301"]
    found = db.fetch(
        "SELECT roost_lower(x) FROM unnest($1::text[]) WITH ORDINALITY u(x, n) ORDER BY n", words
    )
    assert [row[0] for row in found] == [word.lower() for word in words]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    words=st.lists(
        st.text(
            st.one_of(
                st.sampled_from("ΣσςΑαİi\u0307'.\u0345 ab"),
                st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
            ),
            max_size=8,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_roost_lower_on_strings(db: Database, words: list[str]) -> None:
    found = db.fetch(
        "SELECT roost_lower(x) FROM unnest($1::text[]) WITH ORDINALITY u(x, n) ORDER BY n", words
    )
    assert [row[0] for row in found] == [word.lower() for word in words]


INDEX_ROWS = 20_000


def test_field_index_is_used(db: Database) -> None:
    dialect = PostgresDialect.for_collation(
        db.fetch("SELECT datcollate FROM pg_database WHERE datname = current_database()")[0][0]
    )
    assert dialect.c_collation
    db.run(
        db.conn.execute(
            "INSERT INTO t SELECT 'r' || i, 'u' || (i % 500), '2026-01-01', '2026-01-01', 1,"
            " jsonb_build_object('title', 't' || i, 'n', i, 'items', jsonb_build_array(i))"
            f" FROM generate_series(1, {INDEX_ROWS}) i"
        )
    )
    for path in ["title", "n", "items.0", "owner", "created"]:
        name = path.split(".")[0]
        db.run(db.conn.execute(f"CREATE INDEX t_{name}_idx ON t (({dialect.field_sql(path)}))"))
    db.run(db.conn.execute("ANALYZE t"))
    cases = {
        'title = "t77"': "title",
        'title >= "t9999" && title < "t99991"': "title",
        "n > 19990": "n",
        "n <= 3": "n",
        "n = 10.0": "n",
        "items.0 = 5": "items",
        "owner = @auth.id": "owner",
        "created > @now": "created",
    }
    context = {"auth.id": "u7", "now": "2026-06-01"}
    for text, index in cases.items():
        sql, params = compile_filter(parse(text), dialect, context)
        plan = "\n".join(
            row[0] for row in db.fetch(f"EXPLAIN SELECT id FROM t WHERE {sql}", *params)
        )
        assert f"t_{index}_idx" in plan, (text, plan)
        expected = db.ids(sql, params)
        assert len(expected) < INDEX_ROWS / 10, text
    # The primary key gives the default order (id) and its keyset pages.
    keys = with_tiebreaker(())
    order = order_by_sql(keys, dialect)
    where, params = keyset_sql(keys, ["r500"], dialect)
    plan = "\n".join(
        row[0]
        for row in db.fetch(
            f"EXPLAIN SELECT id FROM t WHERE {where} ORDER BY {order} LIMIT 50", *params
        )
    )
    assert "Index Only Scan using t_pkey" in plan and "Sort" not in plan, plan
