"""Sort specs, ``ORDER BY`` and keyset ("seek") pagination predicates.

Ordering is SQLite's native ``ORDER BY`` on :meth:`Dialect.sort_sql` of each path
(``json_extract(data, '$.path')`` for data fields, the column for system fields):

1. null and missing fields first (ascending) or last (descending);
2. numbers, numerically; booleans sort as the numbers 0 and 1 among them;
3. strings in code point order; arrays and objects sort as their compact JSON text
   among the strings (``[`` is U+005B, ``{`` is U+007B).

Callers append ``id`` as the final tie-breaker (:func:`with_tiebreaker`) so the
order is total, select :func:`sort_values_sql` alongside each row, and pass the last
row's values to :func:`keyset_sql` to fetch the next page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from roost.query.ast import Path, Scalar
from roost.query.errors import ExpressionError
from roost.query.lexer import read_path_list
from roost.query.limits import MAX_FILTER_LENGTH, MAX_SORT_FIELDS
from roost.query.sql import Dialect, Fragment, Params, finish_fragment, sql_and, sql_or

ID_PATH = Path(("id",))


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sort field: ``title`` (ascending) or ``-title`` (descending)."""

    path: Path
    descending: bool = False

    def __str__(self) -> str:
        return f"{'-' if self.descending else ''}{self.path}"


def parse_sort(text: str) -> tuple[SortKey, ...]:
    """Parse ``"-created,title,author.name"``; a ``+`` prefix is allowed and means ascending."""
    if len(text) > MAX_FILTER_LENGTH:
        raise ExpressionError(
            f"sort is longer than {MAX_FILTER_LENGTH} characters", MAX_FILTER_LENGTH
        )
    keys: list[SortKey] = []
    for item in read_path_list(text, "sort", signed=True):
        path = Path(item.segments)
        if any(key.path == path for key in keys):
            raise ExpressionError(f"'{path}' appears twice in sort", item.position)
        if len(keys) >= MAX_SORT_FIELDS:
            raise ExpressionError(f"sort has more than {MAX_SORT_FIELDS} fields", item.position)
        keys.append(SortKey(path, item.descending))
    return tuple(keys)


def with_tiebreaker(keys: Sequence[SortKey]) -> tuple[SortKey, ...]:
    """``keys`` followed by ``id`` unless ``id`` is already a key, in the direction of the
    last key: an index on the keys then ``id`` gives the whole order, read either way."""
    if any(key.path == ID_PATH for key in keys):
        return tuple(keys)
    return (*keys, SortKey(ID_PATH, bool(keys) and keys[-1].descending))


def order_by_sql(keys: Sequence[SortKey], dialect: Dialect) -> str:
    """The ``ORDER BY`` list (without the keywords) for ``keys``."""
    return ", ".join(dialect.order_term(key.path, key.descending) for key in keys)


def sort_values_sql(keys: Sequence[SortKey], dialect: Dialect) -> list[str]:
    """The expressions to select with each row; their values feed :func:`keyset_sql`."""
    return [dialect.sort_sql(key.path) for key in keys]


def keyset_sql(
    keys: Sequence[SortKey], last_values: Sequence[Scalar], dialect: Dialect
) -> tuple[str, list[object]]:
    """A condition true iff a row sorts strictly after the row with ``last_values``.

    ``last_values`` are what the database returned for :func:`sort_values_sql` on the
    previous page's last row (``None`` for NULL).
    """
    if len(keys) != len(last_values):
        raise ValueError(f"{len(keys)} sort keys but {len(last_values)} values")
    params = Params()
    row = dialect.keyset_row(keys, last_values, params)
    if row is not None:
        return params.finish(row, dialect)
    after: Fragment = False  # equal on every key: not strictly after
    for key, value in zip(reversed(keys), reversed(last_values), strict=True):
        beyond, tied = dialect.keyset_step(key.path, value, key.descending, params)
        after = sql_or([*beyond, sql_and([tied, after])])
    return params.finish(finish_fragment(after, dialect), dialect)
