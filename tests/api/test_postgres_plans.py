"""PostgreSQL uses the declared indexes for Roost's own page queries.

The planner prefers a sequential scan on a small table, so these run on 20,000 records
(inserted in one statement, then ``ANALYZE``) and explain exactly the SQL that
``Records.query`` sends: filter, rule, sort with the ``id`` tie-breaker, keyset step.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.scenario import Api
from roost.auth.principal import ANONYMOUS
from roost.query.parser import parse
from roost.query.sort import keyset_sql, parse_sort, with_tiebreaker
from roost.query.sql import compile_filter
from roost.records.service import ExpressionContext, page_sql
from roost.storage.postgres import PostgresStorage

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

RECORDS = 20_000
ITEMS = {
    "name": "items",
    "indexes": [{"fields": ["tag", "n"]}, {"fields": ["n"]}],
}


@pytest.fixture
async def items(api: Api) -> Api:
    await api.create_collection(ITEMS)
    storage = api.components.storage
    assert isinstance(storage, PostgresStorage)
    async with storage.write() as conn:
        await conn.execute(
            "INSERT INTO r_items (id, owner, created, updated, version, data)"
            " SELECT lpad(i::text, 8, '0'), NULL, '2026-01-01T00:00:00Z',"
            " '2026-01-01T00:00:00Z', 1,"
            " jsonb_build_object('tag', 't' || (i % 100), 'n', i, 'other', i)"
            " FROM generate_series(1, ?::int) AS i",
            (RECORDS,),
        )
    async with storage.read() as conn:
        await conn.execute("ANALYZE r_items")
    return api


async def explain(api: Api, filter: str | None, sort: str, after: list[Any] | None = None) -> str:
    """``EXPLAIN ANALYZE`` of the page query of a request by an admin (no rule clause)."""
    dialect = api.components.storage.dialect
    keys = with_tiebreaker(parse_sort(sort))
    clauses = []
    if filter is not None:
        clauses.append(compile_filter(parse(filter), dialect, ExpressionContext(ANONYMOUS)))
    if after is not None:
        clauses.append(keyset_sql(keys, after, dialect))
    sql, params = page_sql("items", keys, clauses, 21, dialect)
    async with api.components.storage.read() as conn:
        rows = await conn.fetch_all(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", params)
    return "\n".join(row["QUERY PLAN"] for row in rows)


async def test_an_equality_filter_and_a_sort_read_one_index_in_order(items: Api) -> None:
    plan = await explain(items, "tag = 't7'", "-n")
    assert "Index Scan Backward using ix_items_" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert "Bitmap" not in plan, plan  # not every row of the tag, then a sort


async def test_keyset_pages_continue_on_the_sort_index(items: Api) -> None:
    first = await explain(items, None, "n")
    later = await explain(items, None, "n", after=["12345", "00012345"])
    for plan in (first, later):
        assert "Index Scan using ix_items_" in plan, plan
        assert "Seq Scan" not in plan, plan
    assert "rows=21 " in later, later  # reads only the page, from the cursor on


@pytest.mark.parametrize("filter", ["n = 77", "n > 19990", "n >= 100 && n < 120"])
async def test_filters_on_indexed_fields_use_an_index(items: Api, filter: str) -> None:
    plan = await explain(items, filter, "id")
    assert "ix_items_" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_an_undeclared_field_scans(items: Api) -> None:
    plan = await explain(items, "other = 77", "id")
    assert "ix_items_" not in plan, plan


async def test_an_index_declared_on_a_full_table_is_built_and_used(items: Api) -> None:
    indexes = [*ITEMS["indexes"], {"fields": ["other"], "unique": True}]
    response = await items.request("PATCH", "/api/collections/items", body={"indexes": indexes})
    assert response.status_code == 200, response.text
    async with items.components.storage.read() as conn:
        await conn.execute("ANALYZE r_items")
        invalid = await conn.fetch_all(
            "SELECT indexrelid FROM pg_index WHERE indrelid = 'r_items'::regclass"
            " AND NOT indisvalid"
        )
    assert invalid == []
    assert "ix_items_" in await explain(items, "other = 77", "id")
