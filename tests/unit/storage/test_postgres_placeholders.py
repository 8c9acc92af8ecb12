"""``?`` placeholders become ``$n`` for PostgreSQL, except inside quoted text and comments."""

from __future__ import annotations

import pytest

from roost.storage.base import IndexSpec
from roost.storage.postgres import index_name, numbered, owner_index_name


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "SELECT 1"),
        ("SELECT ? , ?", "SELECT $1 , $2"),
        ("a = ? AND b IN (?, ?) LIMIT ?", "a = $1 AND b IN ($2, $3) LIMIT $4"),
        ("x = '?' AND y = ?", "x = '?' AND y = $1"),
        ("x = 'it''s ?' AND y = ?", "x = 'it''s ?' AND y = $1"),
        ("x = E'\\' ?' AND y = ?", "x = E'\\' ?' AND y = $1"),
        ("x = '\\' AND y = ?", "x = '\\' AND y = $1"),  # standard strings: \ is plain
        ('SELECT "we?ird" FROM t WHERE a = ?', 'SELECT "we?ird" FROM t WHERE a = $1'),
        ("SELECT ? -- why?\n, ?", "SELECT $1 -- why?\n, $2"),
        ("SELECT ? /* a /* nested? */ ? */ , ?", "SELECT $1 /* a /* nested? */ ? */ , $2"),
        ("SELECT $$ ? $$, $tag$ '?' $tag$, ?", "SELECT $$ ? $$, $tag$ '?' $tag$, $1"),
        ("SELECT ?::text[], data #> '{a,b}'", "SELECT $1::text[], data #> '{a,b}'"),
        ("SELECT $1, $2", "SELECT $1, $2"),
        ("SELECT 'unterminated ?", "SELECT 'unterminated ?"),
    ],
)
def test_placeholders_are_numbered_outside_quotes(sql: str, expected: str) -> None:
    assert numbered(sql) == expected


def test_mixed_placeholders_are_refused() -> None:
    with pytest.raises(ValueError, match="mixes"):
        numbered("SELECT $1, ?")


def test_index_names_fit_postgres_identifiers() -> None:
    long = "a" * 63
    names = {
        index_name(long, IndexSpec(("x",))),
        index_name(long, IndexSpec(("x",), unique=True)),
        index_name(long[:-1] + "b", IndexSpec(("x",))),
        owner_index_name(long),
        owner_index_name(long[:-1] + "b"),
    }
    assert len(names) == 5
    assert all(len(name) <= 63 for name in names)
    assert owner_index_name("posts") == "owner_posts"
    assert index_name("posts", IndexSpec(("a",))) == index_name("posts", IndexSpec(("a",)))
