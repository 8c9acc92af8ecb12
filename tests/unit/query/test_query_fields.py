from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.query.ast import Path
from roost.query.errors import ExpressionError
from roost.query.fields import parse_fields, project
from roost.query.limits import MAX_PROJECTION_FIELDS
from roost.query.parser import parse_path
from roost.query.sort import parse_sort


def test_parse_fields() -> None:
    assert parse_fields("id,title,author.name") == (
        Path(("id",)),
        Path(("title",)),
        Path(("author", "name")),
    )
    assert parse_fields("a, b ,a") == (Path(("a",)), Path(("b",)))


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "expected a field name"),
        ("a,,b", 2, "expected a field name"),
        ("a, items.0", 3, "cannot select array elements"),
        ("a,id.x", 2, "system field"),
        ("a,b-c", 3, "unexpected character '-'"),
        ("-a", 0, "expected a field name"),
        (",".join(f"f{i}" for i in range(MAX_PROJECTION_FIELDS + 1)), 246, "more than 64"),
    ],
)
def test_parse_fields_rejects(text: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_fields(text)
    assert message in caught.value.message
    assert caught.value.position == position


RECORD: dict[str, Any] = {
    "id": "r1",
    "owner": "u1",
    "title": "T",
    "author": {"name": "Ann", "age": 3, "address": {"city": "X"}},
    "tags": ["a"],
    "n": None,
}


def test_project() -> None:
    assert project(RECORD, parse_fields("title")) == {"id": "r1", "title": "T"}
    assert project(RECORD, parse_fields("author.name,author.address.city,n")) == {
        "id": "r1",
        "author": {"name": "Ann", "address": {"city": "X"}},
        "n": None,
    }
    assert project(RECORD, parse_fields("author,author.name")) == {
        "id": "r1",
        "author": RECORD["author"],
    }
    assert project(RECORD, parse_fields("missing,title.x,author.missing")) == {"id": "r1"}
    assert project(RECORD, parse_fields("owner,tags")) == {"id": "r1", "owner": "u1", "tags": ["a"]}
    before = repr(RECORD)
    project(RECORD, parse_fields("author.name"))
    assert repr(RECORD) == before


def test_parse_path() -> None:
    assert parse_path("items.0.name") == Path(("items", 0, "name"))
    with pytest.raises(ExpressionError) as caught:
        parse_path("a b")
    assert caught.value.position == 1


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_fields_and_sort(text: str) -> None:
    for parser in (parse_fields, parse_sort, parse_path):
        try:
            parser(text)
        except ExpressionError as error:
            assert 0 <= error.position <= len(text)
