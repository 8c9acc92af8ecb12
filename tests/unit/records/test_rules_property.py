"""A list rule compiled to SQL selects exactly the records its view rule lets the caller see.

For generated rules (over ``owner``, ``@auth.*``, flags and numbers), callers and records,
``list_clause`` run against a real SQLite table keeps exactly the records for which
``evaluate`` of the rule is true, and ``check(..., "view", ...)`` agrees with both.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from roost.auth.principal import ANONYMOUS, Principal
from roost.errors import Forbidden, NotFound, Unauthorized
from roost.query.evaluate import evaluate
from roost.query.sqlite import SQLiteDialect
from roost.records.collections import Collection, CollectionDef, Rules
from roost.records.rules import check, list_clause, parsed
from roost.records.service import ExpressionContext

USERS = ["u1", "u2", "u3"]
ATOMS = [
    "owner = @auth.id",
    "owner != @auth.id",
    "@auth.id = owner",
    "owner = null",
    "owner != null",
    '@auth.id != null',
    "@auth.id = null",
    '@auth.role = "admin"',
    '@auth.role = "user"',
    "@auth.role = null",
    "@auth.verified = true",
    "@auth.verified != true",
    "public = true",
    "public != true",
    "public = false",
    "public = null",
    "public = @auth.verified",
    "score > 2",
    "score >= 2",
    "score < 1",
    "score <= 1.5",
    "score = 1",
    "score != 1",
    "score in [1, 2.5, \"2\"]",
    "score > @auth.verified",
    "version > 1",
    'owner in ["u1", @auth.id]',
    'owner ~ "u"',
    "owner ~ @auth.id",
    "title ~ @auth.role",
    'title = "user"',
    "title = @auth.role",
    "tags ?= @auth.id",
    'tags ?= "x"',
    "meta.owner = @auth.id",
    "meta.level >= 2",
]  # fmt: skip

RECORD_VALUES: dict[str, list[Any]] = {
    "public": [True, False, None, "true", 1, 0],
    "score": [None, 0, 1, 1.0, 1.5, 2, 2.5, 3, "2", True, -1],
    "title": [None, "user", "USER x", "admin", "", "u1"],
    "tags": [None, [], ["u1"], ["x", "u2"], "u1", [["u1"]], [None, 1]],
    "meta": [None, {}, {"owner": "u1"}, {"owner": "u2", "level": 3}, {"level": "3"}, [1]],
}
ADMIN = Principal(id="boss", role="admin", verified=True)

rules = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a}) && ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) || ({b})", inner, inner),
        st.builds(lambda a: f"!({a})", inner),
    ),
    max_leaves=6,
)
maybe_rules = st.tuples(st.sampled_from(["rule"] * 10 + ["null", "empty"]), rules).map(
    lambda pair: {"null": None, "empty": ""}.get(pair[0], pair[1])
)
users = st.builds(
    Principal,
    id=st.sampled_from(USERS),
    role=st.just("user"),
    verified=st.booleans(),
    session_id=st.just("s"),
)
principals = st.tuples(st.sampled_from(["user"] * 6 + ["anonymous", "admin"]), users).map(
    lambda pair: {"anonymous": ANONYMOUS, "admin": ADMIN}.get(pair[0], pair[1])
)
datas = st.fixed_dictionaries(
    {},
    optional={name: st.sampled_from(values) for name, values in RECORD_VALUES.items()},
)
records = st.lists(
    st.tuples(st.sampled_from([None, *USERS]), st.integers(1, 3), datas), min_size=4, max_size=12
)


def table(rows: list[dict[str, Any]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    SQLiteDialect.register(conn)
    conn.execute(
        "CREATE TABLE things (id TEXT PRIMARY KEY, owner TEXT, created TEXT NOT NULL,"
        " updated TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL)"
    )
    for row in rows:
        system = {k: row[k] for k in ("id", "owner", "created", "updated", "version")}
        data = {k: v for k, v in row.items() if k not in system}
        conn.execute(
            "INSERT INTO things VALUES (?, ?, ?, ?, ?, ?)",
            (*system.values(), orjson.dumps(data).decode()),
        )
    return conn


def collection(rule: str | None) -> Collection:
    definition = CollectionDef(name="things", rules=Rules(list=rule, view=rule))
    return Collection(definition=definition, created="", updated="", version=1)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(rule=maybe_rules, principal=principals, generated=records)
def test_list_rule_sql_selects_what_the_evaluator_accepts(
    rule: str | None, principal: Principal, generated: list[tuple[str | None, int, Any]]
) -> None:
    rows = [
        {
            "id": f"r{n}",
            "owner": owner,
            "created": "2026-01-01T00:00:00.000Z",
            "updated": "2026-01-01T00:00:00.000Z",
            "version": version,
            **data,
        }
        for n, (owner, version, data) in enumerate(generated)
    ]
    every = {row["id"] for row in rows}
    things = collection(rule)
    context = ExpressionContext(principal)
    dialect = SQLiteDialect()
    try:
        clause = list_clause(things, principal, dialect, context)
    except (Unauthorized, Forbidden) as refused:
        assert rule is None and not principal.is_admin
        assert isinstance(refused, Unauthorized) == (principal.id is None)
        event("refused")
        return
    if clause is None:
        assert principal.is_admin or rule == ""
        selected = every
        expected = every
    else:
        assert rule and not principal.is_admin
        sql, params = clause
        conn = table(rows)
        selected = {r[0] for r in conn.execute(f"SELECT id FROM things WHERE {sql}", params)}
        conn.close()
        expected = {row["id"] for row in rows if evaluate(parsed(rule), row, context)}
    assert selected == expected, (rule, principal, sql if clause else None)
    if clause is not None:
        kept = "none" if not expected else "all" if expected == every else "some"
        event(f"compiled rule kept {kept}")
    for row in rows:
        try:
            check(things, "view", principal, row, context)
            visible = True
        except NotFound:
            visible = False
        assert visible == (row["id"] in expected), (rule, principal, row)
