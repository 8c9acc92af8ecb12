"""The important property: SQL and the Python evaluator select exactly the same records.

Set ROOST_QUERY_EXAMPLES (default 200) to run more examples.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from roost.query.ast import (
    And,
    Compare,
    CompareOp,
    ContextRef,
    Expr,
    ListValue,
    Literal,
    Not,
    Operand,
    Or,
    Path,
)
from roost.query.evaluate import evaluate
from roost.query.limits import MAX_DEPTH, MAX_SAFE_INTEGER
from roost.query.parser import parse
from roost.query.render import render
from roost.query.sql import compile_filter
from roost.query.sqlite import SQLiteDialect

NAMES = ["a", "b", "tags"]
POOL: list[Any] = [
    None, True, False, 0, 1, 1.0, 2, 0.5, "", "a", "A", "é", "É", "Crème", "1", "ß",
]  # fmt: skip
SPECIAL_STRINGS = [
    "", "a", "A", "ab", "é", "É", "Crème", "CRÈME", "ß", "SS", "ss", "İ", "i̇", "i", "I",
    "Σ", "σ", "ς", "1", "1.0", "true", "null", "[]", "[1]", '{"a":1}', "x'y", 'q"', "\\",
    "😀", "2026-11-28T18:04:02.123Z", " ", "a%", "_",
]  # fmt: skip
SPECIAL_NUMBERS: list[int | float] = [
    0, 1, -1, 2, 0.5, 1.0, -0.0, 2.5, 1e300, -1e-300, MAX_SAFE_INTEGER, 2**53, 2**53 + 1,
    2**63 - 1, -(2**63), 9007199254740992.0, 1e16,
]  # fmt: skip
TIMES = ["2026-11-28T18:04:02.123Z", "2026-11-28T18:04:02.124Z", "2027-01-01T00:00:00.000Z"]
EXAMPLES = int(os.environ.get("ROOST_QUERY_EXAMPLES", "200"))

texts = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=5),
)
numbers = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
)


class World:
    """Strategies for records, expressions and contexts drawing values from ``pool``.

    Each example picks a small pool of values shared by records and literals, so that
    comparisons often match some records but not all.
    """

    def __init__(self, pool: st.SearchStrategy[Any]) -> None:
        scalars = st.one_of(*[pool] * 6, numbers, texts)
        json_values = st.recursive(
            scalars,
            lambda children: st.one_of(
                st.lists(children, max_size=4),
                st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
            ),
            max_leaves=6,
        )
        values = st.one_of(scalars, scalars, scalars, json_values)
        arrays = st.lists(st.one_of(scalars, scalars, json_values), max_size=4)
        self.datas = st.fixed_dictionaries(
            {}, optional={"a": values, "b": values, "tags": st.one_of(arrays, arrays, values)}
        )
        self.records = st.lists(
            st.fixed_dictionaries(
                {
                    "owner": st.one_of(st.none(), st.sampled_from(["u1", "u2", "É"]), texts),
                    "created": st.sampled_from(TIMES),
                    "updated": st.sampled_from(TIMES),
                    "version": st.integers(1, 4),
                    "data": self.datas,
                }
            ),
            min_size=3,
            max_size=16,
        )
        segments = st.one_of(
            st.just(()),
            st.just(()),
            st.lists(st.one_of(st.sampled_from(NAMES), st.integers(0, 2)), max_size=2).map(tuple),
        )
        data_paths = st.builds(
            lambda first, rest: Path((first, *rest)),
            st.sampled_from([*NAMES, *NAMES, "missing"]),
            segments,
        )
        system_paths = st.sampled_from(["id", "owner", "created", "updated", "version"]).map(
            lambda name: Path((name,))
        )
        literal_values = st.one_of(
            *[pool] * 5,
            st.sampled_from([n for n in SPECIAL_NUMBERS if abs(n) <= MAX_SAFE_INTEGER]),
            st.integers(-3, 3),
            st.floats(allow_nan=False, allow_infinity=False),
            texts,
        ).filter(lambda v: not isinstance(v, int) or abs(v) <= MAX_SAFE_INTEGER)
        literals = st.builds(Literal, literal_values)
        context_refs = st.one_of(
            st.sampled_from(
                [ContextRef("auth.id"), ContextRef("auth.role"), ContextRef("auth.verified")]
                + [ContextRef("now")]
            ),
            st.builds(
                lambda first, rest: ContextRef("request.data", (first, *rest)),
                st.sampled_from([*NAMES, "missing"]),
                segments,
            ),
        )
        operands: st.SearchStrategy[Operand] = st.one_of(
            *[data_paths] * 5, system_paths, literals, context_refs
        )
        right_operands: st.SearchStrategy[Operand] = st.one_of(
            *[literals] * 4, context_refs, data_paths, system_paths
        )
        self.comparisons = st.one_of(
            st.builds(
                Compare,
                st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "~", "!~", "?="]),
                operands,
                right_operands,
            ),
            st.builds(
                lambda left, items: Compare("in", left, ListValue(tuple(items))),
                operands,
                st.one_of(st.lists(right_operands, min_size=1, max_size=4), st.just([])),
            ),
        )
        self.expressions: st.SearchStrategy[Expr] = st.recursive(
            self.comparisons,
            lambda children: st.one_of(
                children.map(Not),
                st.lists(children, min_size=2, max_size=3).map(lambda terms: And(tuple(terms))),
                st.lists(children, min_size=2, max_size=3).map(lambda terms: Or(tuple(terms))),
            ),
            max_leaves=5,
        )
        self.contexts = st.fixed_dictionaries(
            {
                "auth.id": st.sampled_from(["u1", "u2", "É"]),
                "auth.verified": st.booleans(),
                "now": st.sampled_from(TIMES),
                "request.data": self.datas,
            }
        )
        self.json_values = json_values
        self.literal_values = literal_values


def corpus() -> list[dict[str, Any]]:
    """Fixed records covering every kind in every position, added to each generated set."""
    values: list[Any] = [*POOL, "CRÈME brûlée", "ss", "İ", "i̇", "Σ", "ς", "σ", -1, 2**53 + 1]
    values += [[], {}, [1, "a"], {"b": 1}, -0.0, 1e300, "true", "[1]"]
    rows: list[dict[str, Any]] = []
    for i, value in enumerate(values):
        for data in [
            {"a": value},
            {"b": value, "a": values[(i + 3) % len(values)]},
            {"tags": [value, values[(i + 1) % len(values)]]},
            {"a": {"b": value}, "tags": value},
            {"a": [value], "b": {"a": [value]}},
        ]:
            rows.append(
                {
                    "owner": value if isinstance(value, str) else None,
                    "created": TIMES[i % len(TIMES)],
                    "updated": TIMES[(i + 1) % len(TIMES)],
                    "version": i % 4,
                    "data": data,
                }
            )
    return rows


CORPUS = corpus()
WIDE = World(st.sampled_from(POOL))


def draw_world(data: st.DataObject) -> World:
    values = data.draw(
        st.lists(st.one_of(st.sampled_from(POOL), numbers, texts), min_size=1, max_size=4)
    )
    return World(st.sampled_from(values))


def nesting(expr: Expr) -> int:
    """How deep the parser nests when reading render(expr)."""
    if isinstance(expr, Compare):
        return 0
    if isinstance(expr, Not):
        inner = expr.operand
        return 1 + nesting(inner) + (0 if isinstance(inner, Compare | Not) else 1)
    wrap = (And, Or) if isinstance(expr, And) else (Or,)
    return max(nesting(t) + (1 if isinstance(t, wrap) else 0) for t in expr.terms)


def literal_strings(expr: Expr) -> list[str]:
    if isinstance(expr, Compare):
        found = [
            expr.left,
            *(expr.right.items if isinstance(expr.right, ListValue) else [expr.right]),
        ]
        return [o.value for o in found if isinstance(o, Literal) and isinstance(o.value, str)]
    if isinstance(expr, Not):
        return literal_strings(expr.operand)
    return [s for term in expr.terms for s in literal_strings(term)]


SQL_QUOTED = re.compile(r"'[^']*'")
ALLOWED_QUOTED = re.compile(
    r"'\$(\.[A-Za-z][A-Za-z0-9_]*|\[[0-9]+\])+'|'(true|false|integer|real|text|array|object|null)'"
)  # noqa: E501


def make_table(rows: list[dict[str, Any]], ensure_ascii: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    SQLiteDialect.register(conn)
    conn.execute(
        "CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT, created TEXT NOT NULL,"
        " updated TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                f"r{i}",
                row["owner"],
                row["created"],
                row["updated"],
                row["version"],
                json.dumps(row["data"], ensure_ascii=ensure_ascii),
            )
            for i, row in enumerate(rows)
        ],
    )
    return conn


def flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i}",
            "owner": row["owner"],
            "created": row["created"],
            "updated": row["updated"],
            "version": row["version"],
            **row["data"],
        }
        for i, row in enumerate(rows)
    ]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ensure_ascii=st.booleans())
def test_sql_selects_what_evaluator_accepts(data: st.DataObject, ensure_ascii: bool) -> None:
    world = draw_world(data)
    rows = CORPUS + data.draw(world.records, label="rows")
    expr = data.draw(world.expressions, label="expr")
    context: dict[str, Any] = data.draw(world.contexts, label="context")
    assume(nesting(expr) <= MAX_DEPTH)
    text = render(expr)
    reparsed = parse(text)
    assert reparsed == expr
    assert repr(reparsed) == repr(expr)

    dialect = SQLiteDialect()
    sql, params = compile_filter(expr, dialect, context)
    for quoted in SQL_QUOTED.findall(sql):
        assert ALLOWED_QUOTED.fullmatch(quoted), (quoted, sql)
    assert sql.count("?") == len(params)

    conn = make_table(rows, ensure_ascii)
    try:
        got = {row[0] for row in conn.execute(f"SELECT id FROM t WHERE {sql}", params)}
        # The fragment also composes under AND with other conditions.
        both = {row[0] for row in conn.execute(f"SELECT id FROM t WHERE ({sql}) AND 1", params)}
    finally:
        conn.close()
    expected = {record["id"] for record in flat(rows) if evaluate(expr, record, context)}
    event(f"matched {'none' if not expected else 'all' if len(expected) == len(rows) else 'some'}")
    assert got == expected, (text, sql, params)
    assert both == expected


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data(), negate=st.booleans())
def test_each_comparison_over_many_records(data: st.DataObject, negate: bool) -> None:
    world = draw_world(data)
    rows = CORPUS + data.draw(world.records, label="rows")
    comparison = data.draw(world.comparisons, label="comparison")
    context: dict[str, Any] = data.draw(world.contexts, label="context")
    expr: Expr = Not(comparison) if negate else comparison
    sql, params = compile_filter(expr, SQLiteDialect(), context)
    conn = make_table(rows, ensure_ascii=False)
    try:
        got = {row[0] for row in conn.execute(f"SELECT id FROM t WHERE {sql}", params)}
    finally:
        conn.close()
    expected = {record["id"] for record in flat(rows) if evaluate(expr, record, context)}
    event(f"matched {'none' if not expected else 'all' if len(expected) == len(rows) else 'some'}")
    assert got == expected, (render(expr), sql, params)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    value=WIDE.json_values,
    literal=WIDE.literal_values,
    op=st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "~", "!~", "?="]),
)
def test_single_field_comparisons(value: Any, literal: Any, op: CompareOp) -> None:
    """Dense check of one data field against one literal, every kind against every kind."""
    rows = [{"owner": None, "created": "c", "updated": "u", "version": 1, "data": {"a": value}}]
    exprs: list[Expr] = [
        Compare(op, Path(("a",)), Literal(literal)),
        Compare(op, Literal(literal), Path(("a",))),
        Not(Compare(op, Path(("a",)), Literal(literal))),
        Compare("in", Path(("a",)), ListValue((Literal(literal),))),
        Compare(op, Path(("a",)), Path(("a",))),
    ]
    for expr in exprs:
        sql, params = compile_filter(expr, SQLiteDialect(), {})
        conn = make_table(rows, ensure_ascii=True)
        try:
            got = bool(conn.execute(f"SELECT id FROM t WHERE {sql}", params).fetchall())
        finally:
            conn.close()
        assert got == evaluate(expr, flat(rows)[0]), (render(expr), sql, params)
