from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.query.ast import Path
from roost.query.errors import ExpressionError
from roost.query.limits import MAX_SORT_FIELDS
from roost.query.sort import (
    SortKey,
    keyset_sql,
    order_by_sql,
    parse_sort,
    sort_values_sql,
    with_tiebreaker,
)
from roost.query.sqlite import SQLiteDialect


def key(text: str, descending: bool = False) -> SortKey:
    return SortKey(Path(tuple(int(s) if s.isdigit() else s for s in text.split("."))), descending)


def test_parse_sort() -> None:
    assert parse_sort("-created,title,author.name") == (
        key("created", True),
        key("title"),
        key("author.name"),
    )
    assert parse_sort(" +a , -items.0.b ") == (key("a"), key("items.0.b", True))
    assert parse_sort("id") == (key("id"),)
    assert str(parse_sort("-a.b")[0]) == "-a.b"


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "expected a field name"),
        ("a,", 2, "expected a field name"),
        ("a,,b", 2, "expected a field name"),
        ("-", 1, "expected a field name"),
        ("a,-a", 3, "appears twice"),
        ("a, a", 3, "appears twice"),
        ("a b", 1, "unexpected character ' '"),
        ("a;drop", 1, "unexpected character ';'"),
        ("id.x", 0, "system field"),
        ("a..b", 2, "expected a field name or array index"),
        ("--a", 1, "expected a field name"),
        (",".join(f"f{i}" for i in range(MAX_SORT_FIELDS + 1)), 24, "more than 8 fields"),
    ],
)
def test_parse_sort_rejects(text: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_sort(text)
    assert message in caught.value.message
    assert caught.value.position == position


def test_tiebreaker_and_order_by() -> None:
    dialect = SQLiteDialect()
    keys = with_tiebreaker(parse_sort("-created,title"))
    assert keys[-1] == key("id")
    assert with_tiebreaker(parse_sort("-id")) == (key("id", True),)
    assert order_by_sql(keys, dialect) == "created DESC, json_extract(data, '$.title') ASC, id ASC"
    assert sort_values_sql(keys, dialect) == ["created", "json_extract(data, '$.title')", "id"]


def test_keyset_shapes() -> None:
    dialect = SQLiteDialect()
    x = "json_extract(data, '$.x')"
    assert keyset_sql([key("x"), key("id")], [None, "r1"], dialect) == (
        f"({x} IS NOT NULL OR ({x} IS NULL AND id > ?))",
        ["r1"],
    )
    assert keyset_sql([key("x"), key("id")], [3, "r1"], dialect) == (
        f"({x} > ? OR ({x} IS ? AND id > ?))",
        [3, 3, "r1"],
    )
    assert keyset_sql([key("x", True), key("id")], [3, "r1"], dialect) == (
        f"({x} < ? OR {x} IS NULL OR ({x} IS ? AND id > ?))",
        [3, 3, "r1"],
    )
    assert keyset_sql([key("x", True), key("id")], [None, "r1"], dialect) == (
        f"({x} IS NULL AND id > ?)",
        ["r1"],
    )
    assert keyset_sql([key("x", True)], [None], dialect) == ("0", [])
    with pytest.raises(ValueError):
        keyset_sql([key("x")], [], dialect)


SORT_VALUES: list[Any] = [
    None, True, False, 0, 1, 1.0, -1, 2.5, 2**53 + 1, 1e300, "", "a", "B", "b", "é", "É",
    "😀", "1", [], [1], ["a"], {}, {"a": 1},
]  # fmt: skip
values = st.one_of(st.sampled_from(SORT_VALUES), st.integers(-2, 2), st.text(max_size=2))
records = st.lists(
    st.fixed_dictionaries(
        {
            "owner": st.one_of(st.none(), st.sampled_from(["u1", "u2"])),
            "created": st.sampled_from(["2026-01-01", "2026-01-02"]),
            "version": st.integers(1, 3),
            "data": st.fixed_dictionaries(
                {},
                optional={
                    "a": values,
                    "b": st.one_of(values, st.fixed_dictionaries({}, optional={"c": values})),
                    "tags": st.lists(values, max_size=2),
                },
            ),
        }
    ),
    max_size=25,
)
SORT_PATHS = ["a", "b", "b.c", "tags.0", "tags.1", "owner", "created", "version", "id"]
sort_specs = st.lists(
    st.tuples(st.sampled_from(SORT_PATHS), st.booleans()),
    min_size=1,
    max_size=4,
    unique_by=lambda item: item[0],
)


@settings(max_examples=200, deadline=None)
@given(rows=records, spec=sort_specs, page_size=st.integers(1, 7))
def test_keyset_pages_cover_every_row_once_in_order(
    rows: list[dict[str, Any]], spec: list[tuple[str, bool]], page_size: int
) -> None:
    dialect = SQLiteDialect()
    keys = with_tiebreaker(parse_sort(",".join(("-" if d else "") + p for p, d in spec)))
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT, created TEXT NOT NULL,"
        " updated TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                f"r{i:02}",
                r["owner"],
                r["created"],
                r["created"],
                r["version"],
                json.dumps(r["data"]),
            )
            for i, r in enumerate(rows)
        ],
    )
    order = order_by_sql(keys, dialect)
    select = ", ".join(["id", *sort_values_sql(keys, dialect)])
    everything = [row[0] for row in conn.execute(f"SELECT id FROM t ORDER BY {order}")]
    paged: list[str] = []
    last: list[Any] | None = None
    for _ in range(len(rows) + 2):
        where, params = ("1", []) if last is None else keyset_sql(keys, last, dialect)
        page = conn.execute(
            f"SELECT {select} FROM t WHERE {where} ORDER BY {order} LIMIT ?",
            [*params, page_size],
        ).fetchall()
        if not page:
            break
        paged.extend(row[0] for row in page)
        last = list(page[-1][1:])
    conn.close()
    assert paged == everything
    assert len(set(paged)) == len(rows)
