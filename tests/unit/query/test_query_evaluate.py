from __future__ import annotations

from typing import Any

import pytest

from roost.query.evaluate import evaluate, icontains, kind_of, values_equal
from roost.query.parser import parse

RECORD: dict[str, Any] = {
    "id": "r1",
    "owner": None,
    "created": "2026-11-28T18:04:02.123Z",
    "updated": "2026-11-29T08:00:00.000Z",
    "version": 3,
    "title": "Crème Brûlée",
    "status": "draft",
    "n": 1,
    "f": 1.0,
    "half": 0.5,
    "zero": 0,
    "yes": True,
    "no": False,
    "nothing": None,
    "tags": ["a", "B", 1, True, None, 2.0],
    "empty": [],
    "author": {"name": "Ann", "age": 30, "langs": ["en", "fr"]},
    "items": [{"name": "x", "price": 3}, {"name": "y", "price": 4.5}],
    "numstr": "1",
    "upper": "ÉCOLE",
}
CONTEXT: dict[str, Any] = {
    "auth.id": "u1",
    "auth.role": "user",
    "auth.verified": True,
    "now": "2026-12-01T00:00:00.000Z",
    "request.data": {"title": "Crème Brûlée", "list": [1, 2], "obj": {"a": 1}, "n": 1.0},
}

CASES: list[tuple[str, bool]] = [
    # = across kinds
    ("n = 1", True),
    ("n = 1.0", True),
    ("f = 1", True),
    ("n = f", True),
    ("n = '1'", False),
    ("numstr = 1", False),
    ("n = true", False),
    ("yes = 1", False),
    ("yes = true", True),
    ("no = false", True),
    ("zero = false", False),
    ("zero = null", False),
    ("nothing = null", True),
    ("missing = null", True),
    ("missing = nothing", True),
    ("title.x = null", True),
    ("n.x = null", True),
    ("tags.0.x = null", True),
    ("tags = tags", False),
    ("author = author", False),
    ("empty = null", False),
    ("tags.0 = 'a'", True),
    ("tags.1 = 'b'", False),
    ("tags.99 = null", True),
    ("author.name = 'Ann'", True),
    ("author.langs.1 = 'fr'", True),
    ("items.1.price = 4.5", True),
    ("items.name = null", True),
    ("author.0 = null", True),
    ("owner = null", True),
    ("version = 3", True),
    ("version = 3.0", True),
    ("id = 'r1'", True),
    ("1 = 1", True),
    ("1 = 1.0", True),
    ("'a' = 'a'", True),
    ("null = null", True),
    ("true = 1", False),
    # !=
    ("status != 'done'", True),
    ("missing != 'done'", True),
    ("missing != null", False),
    ("tags != tags", True),
    ("n != '1'", True),
    # ordering
    ("n < 2", True),
    ("n <= 1", True),
    ("n >= 1.0", True),
    ("n > 0.5", True),
    ("half < n", True),
    ("n > '0'", False),
    ("numstr > 0", False),
    ("yes > 0", False),
    ("yes >= true", False),
    ("missing < 1", False),
    ("missing >= null", False),
    ("nothing <= null", False),
    ("status > 'a'", True),
    ("status < 'e'", True),
    ("'B' < 'a'", True),
    ("'é' > 'z'", True),
    ("created < @now", True),
    ("updated > created", True),
    ("tags > 'a'", False),
    ("version >= 3", True),
    # ~ and !~
    ("title ~ 'brûlée'", True),
    ("title ~ 'CRÈME'", True),
    ("title ~ ''", True),
    ("upper ~ 'école'", True),
    ("title ~ 'x'", False),
    ("n ~ '1'", False),
    ("numstr ~ 1", False),
    ("tags ~ 'a'", False),
    ("missing ~ ''", False),
    ("title !~ 'x'", True),
    ("missing !~ 'x'", True),
    ("title !~ 'crème'", False),
    # ?=
    ("tags ?= 'a'", True),
    ("tags ?= 'b'", False),
    ("tags ?= 1", True),
    ("tags ?= 1.0", True),
    ("tags ?= 2", True),
    ("tags ?= true", True),
    ("tags ?= null", True),
    ("tags ?= false", False),
    ("empty ?= null", False),
    ("missing ?= null", False),
    ("title ?= 'Crème Brûlée'", False),
    ("author ?= 'Ann'", False),
    ("author.langs ?= 'en'", True),
    ("items ?= 'x'", False),
    ("@request.data.list ?= 2", True),
    ("@request.data.list ?= n", True),
    ("@request.data.obj ?= 1", False),
    # in
    ("status in ['draft', 'done']", True),
    ("status in []", False),
    ("missing in [null]", True),
    ("missing in [1, 2]", False),
    ("n in ['1', true]", False),
    ("n in [2, 1.0]", True),
    ("n in [f]", True),
    ("owner in [@auth.id, null]", True),
    ("tags in [tags]", False),
    # context
    ("@auth.id = 'u1'", True),
    ("@auth.role = 'user'", True),
    ("@auth.verified = true", True),
    ("@auth.verified = 1", False),
    ("title = @request.data.title", True),
    ("n = @request.data.n", True),
    ("@request.data.missing = null", True),
    ("@request.data.title.x = null", True),
    ("@request.data.list = @request.data.list", False),
    ("@request.data.obj.a = 1", True),
    ("owner = @auth.id", False),
    # boolean logic
    ("!n = 1", False),
    ("!!n = 1", True),
    ("n = 1 && status = 'draft'", True),
    ("n = 1 && status = 'done'", False),
    ("n = 2 || status = 'draft'", True),
    ("n = 2 || status = 'done'", False),
    ("!(n = 2 || status = 'done')", True),
    ("n = 2 || n = 1 && yes = true", True),
    ("(n = 2 || n = 1) && yes = false", False),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_evaluate(text: str, expected: bool) -> None:
    assert evaluate(parse(text), RECORD, CONTEXT) is expected


def test_missing_context_is_null() -> None:
    assert evaluate(parse("@auth.id = null"), RECORD, {})
    assert evaluate(parse("@request.data.x = null"), RECORD)
    assert not evaluate(parse("owner = @auth.id"), {"owner": "u1"}, {})


def test_kinds() -> None:
    values: list[object] = [None, True, 1, 1.5, "s", [], {}]
    assert [kind_of(v) for v in values] == [
        "null",
        "bool",
        "number",
        "number",
        "string",
        "array",
        "object",
    ]
    assert not values_equal(True, 1)
    assert not values_equal(0, False)
    assert values_equal(1, 1.0)


def test_icontains_unicode() -> None:
    assert icontains("STRASSE", "strasse")
    assert icontains("Σίσυφος", "σίσυφος")
    assert icontains("İstanbul", "i̇stanbul")  # str.lower: "İ" becomes "i̇"
    assert not icontains("abc", "abd")
