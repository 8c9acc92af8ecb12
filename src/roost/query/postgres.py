"""The PostgreSQL dialect: ``$n`` placeholders, ``jsonb`` operators.

Table layout: ``id TEXT, owner TEXT NULL, created TEXT, updated TEXT, version BIGINT,
data JSONB``. Declare the four text columns ``COLLATE "C"`` (or create the database with
``LC_COLLATE 'C'``): keyset pagination, ``ORDER BY`` and ranges on system fields compare
them in code point order.

Before running compiled SQL, **run** :func:`setup_sql` **once per database** (idempotent):
it creates ``roost_lower(text)``, the exact equivalent of Python's ``str.lower`` used by
``~`` (PostgreSQL's ``lower()`` follows the C library, which differs from Python: ``İ``,
final sigma, Unicode versions).

Every bound value is a ``str``: the JSON text of the literal (``'"x"'``, ``'1.5'``,
``'true'``), cast in SQL (``$1::text::jsonb``, ``$1::text::numeric``), so the statements
work whatever ``jsonb`` codec the connection has.

How values compare (the same results as the evaluator and SQLite):

- a data field against a literal or another data field compares ``jsonb`` values
  (``data #> '{a}' = $1::text::jsonb``): equality is exact for strings, numeric for
  numbers (``1 = 1.0``), false across types (so ``=`` against a literal needs no
  ``jsonb_typeof`` guard, and the planner's statistics on the expression apply), and an
  index on ``field_sql(path)`` (``data #> '{a}'``) serves ``=`` and number ranges. String
  ranges compare ``jsonb`` too when the database's ``LC_COLLATE`` is ``C``/``POSIX``
  (``PostgresDialect.for_collation``), so the index also serves them; otherwise they
  compare ``text COLLATE "C"`` (correct, no index).
- a system column against anything compares native values: ``text COLLATE "C"`` for
  the text columns, ``numeric`` for ``version``.
- ``~`` is ``strpos(roost_lower(a), roost_lower(b)) > 0``.
- ``?=`` is ``jsonb`` containment of a one-element array (top-level elements only).

Sorting reproduces SQLite's ``ORDER BY`` of ``json_extract`` values with three terms per
data field: a rank (0: null or missing, 1: number or boolean, 2: string, array or
object), the number (booleans 0 and 1), the text (``COLLATE "C"``). Known divergence:
arrays and objects sort by PostgreSQL's ``jsonb`` text (``[1, "a"]``, keys sorted,
numbers normalised: ``1e300`` written out in full) where SQLite uses the stored compact
text (``[1,"a"]``, keys in insertion order). Their rank among strings is the same, and
they order the same among themselves and against strings except where those texts
differ, e.g. multi-key objects or a string such as ``"[1,!"`` against ``[1,"a"]``.

Limits shared with SQLite: strings must not contain U+0000 (``jsonb`` rejects it); an
integer beyond ±2**53 compared with a float within one unit in the last place of it
may compare differently (``jsonb`` keeps the float's shortest decimal text, not its exact
value); records cannot hold such integers.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from roost.query.ast import SYSTEM_FIELDS, Path, Scalar
from roost.query.evaluate import Kind
from roost.query.sql import Dialect, Fragment, Params, Source

if TYPE_CHECKING:
    from roost.query.sort import SortKey

_JSONB_TYPES: dict[Kind, str] = {
    "null": "null",
    "bool": "boolean",
    "number": "number",
    "string": "string",
    "array": "array",
    "object": "object",
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ORDER_OPS = frozenset({"<", "<=", ">", ">="})
_TEXT_COLUMNS = frozenset({"id", "owner", "created", "updated"})
_NULLABLE_COLUMNS = frozenset({"owner"})
C_COLLATIONS = frozenset({"C", "POSIX"})
LOWER_FUNCTION = "roost_lower"


class PostgresDialect(Dialect):
    """PostgreSQL 13 or later: ``$n`` placeholders, ``jsonb`` paths and operators."""

    data_column = "data"

    def __init__(self, c_collation: bool = False) -> None:
        self.c_collation = c_collation
        """True when the database's default collation is C: ``jsonb`` string comparisons
        are then code point order, and string ranges can use field indexes."""

    @classmethod
    def for_collation(cls, datcollate: str) -> PostgresDialect:
        """The dialect for a database whose ``pg_database.datcollate`` is ``datcollate``
        (``SELECT datcollate FROM pg_database WHERE datname = current_database()``)."""
        return cls(c_collation=datcollate in C_COLLATIONS)

    def placeholder(self, index: int) -> str:
        return f"${index}"

    # -- paths ---------------------------------------------------------------------------

    def _segments(self, path: Path) -> list[str]:
        if not path.segments or path.segments[0] in SYSTEM_FIELDS:
            raise ValueError(f"not a data path: {path.segments!r}")
        if isinstance(path.segments[0], int):
            raise ValueError(f"invalid field path: {path.segments!r}")
        texts: list[str] = []
        for segment in path.segments:
            if isinstance(segment, int):
                if segment < 0:
                    raise ValueError(f"invalid field path: {path.segments!r}")
                texts.append(str(segment))
            elif _NAME.fullmatch(segment):
                texts.append(segment)
            else:  # paths from the parser always match; this guards hand-built trees
                raise ValueError(f"invalid field path: {path.segments!r}")
        return texts

    def _extract(self, segments: Sequence[str]) -> str:
        return f"{self.data_column} #> '{{{','.join(segments)}}}'"

    def data_sql(self, path: Path) -> str:
        """``(data #> '{a,b}')``. An index segment applies only to an array (``#>``
        would also read an object's key ``"0"``), so paths with indexes are guarded:
        ``(CASE WHEN jsonb_typeof(data #> '{a}') = 'array' THEN data #> '{a,0}' END)``."""
        segments = self._segments(path)
        guards = [
            f"jsonb_typeof({self._extract(segments[:i])}) = 'array'"
            for i, segment in enumerate(path.segments)
            if isinstance(segment, int)
        ]
        if not guards:
            return f"({self._extract(segments)})"
        return f"(CASE WHEN {' AND '.join(guards)} THEN {self._extract(segments)} END)"

    # -- filters -------------------------------------------------------------------------

    def null_test(self, path: Path) -> str:
        value = self.field_sql(path)
        return f"({value} IS NULL OR {value} = 'null'::jsonb)"

    def kind_test(self, path: Path, kind: Kind) -> str:
        return f"jsonb_typeof({self.field_sql(path)}) = '{_JSONB_TYPES[kind]}'"

    def array_contains(self, path: Path, kind: Kind, value_sql: str | None) -> str:
        array = self.field_sql(path)
        if value_sql is None:
            return f"{array} @> '[null]'::jsonb"
        return f"({value_sql} IS NOT NULL AND {array} @> jsonb_build_array({value_sql}))"

    def icontains(self, haystack_sql: str, needle_sql: str) -> str:
        return f"strpos({LOWER_FUNCTION}({haystack_sql}), {LOWER_FUNCTION}({needle_sql})) > 0"

    def typed_equality(self, source: Source, other: Source) -> bool:
        """A data field against one literal compares ``jsonb`` values, which are never
        equal across kinds (``1`` is not ``true`` nor ``"1"``)."""
        return {source, other} == {"data", "static"}

    def bind(self, value: Scalar) -> object:
        return json.dumps(value, ensure_ascii=False)

    def operand_sql(self, sql: str, source: Source, kind: Kind, op: str, other: Source) -> str:
        ordered = op in _ORDER_OPS
        if op in ("~", "!~"):
            world = "text"
        elif "column" in (source, other) and op != "?=":
            world = "native"
        elif ordered and kind == "string" and not self.c_collation:
            world = "text"
        else:
            world = "jsonb"
        if world == "jsonb":
            if source == "static":
                return f"{sql}::text::jsonb"
            if source == "column":
                return f"to_jsonb({sql})"
            return sql
        if kind == "number":  # native: a data field or literal against version (BIGINT)
            if source == "static":
                return f"{sql}::text::numeric"
            return f"({sql})::numeric" if source == "data" else sql
        if source == "static":
            text = f"({sql}::text::jsonb #>> '{{}}')"
        elif source == "data":
            text = f"({sql} #>> '{{}}')"
        else:
            text = sql
        return f'{text} COLLATE "C"' if ordered else text

    # -- sorting -------------------------------------------------------------------------

    def sort_sql(self, path: Path) -> str:
        """The value selected for keyset pagination: the column for system fields, the
        ``jsonb`` text (``(data #> '{a}')::text``, NULL when missing) for data fields."""
        if path.is_system:
            name = str(path.segments[0])
            column = self.column_sql(name)
            return f'({column} COLLATE "C")' if name in _TEXT_COLUMNS else column
        return f"({self.field_sql(path)})::text"

    @staticmethod
    def _sort_terms(value: str) -> tuple[str, str, str]:
        """Rank, number and text of a ``jsonb`` value (never NULL), see the module doc."""
        kind = f"jsonb_typeof({value})"
        rank = (
            f"(CASE {kind} WHEN 'number' THEN 1 WHEN 'boolean' THEN 1"
            " WHEN 'string' THEN 2 WHEN 'array' THEN 2 WHEN 'object' THEN 2 ELSE 0 END)"
        )
        number = (
            f"(CASE {kind} WHEN 'number' THEN ({value})::numeric"
            f" WHEN 'boolean' THEN (CASE WHEN ({value})::boolean THEN 1 ELSE 0 END)"
            " ELSE 0 END)"
        )
        text = (
            f"(CASE {kind} WHEN 'string' THEN {value} #>> '{{}}'"
            f" WHEN 'array' THEN ({value})::text WHEN 'object' THEN ({value})::text"
            " ELSE '' END COLLATE \"C\")"
        )
        return rank, number, text

    def order_terms(self, path: Path) -> tuple[str, ...]:
        """The expressions ``ORDER BY`` sorts ``path`` on: an index on exactly these (after
        the filtered fields) gives rows in sort order."""
        if path.is_system:
            return (self.sort_sql(path),)
        return self._sort_terms(self.field_sql(path))

    def order_term(self, path: Path, descending: bool) -> str:
        direction = "DESC" if descending else "ASC"
        if path.is_system and path.segments[0] in _NULLABLE_COLUMNS:
            nulls = "NULLS LAST" if descending else "NULLS FIRST"
            return f"{self.sort_sql(path)} {direction} {nulls}"
        return ", ".join(f"{term} {direction}" for term in self.order_terms(path))

    def keyset_row(
        self, keys: Sequence[SortKey], values: Sequence[Scalar], params: Params
    ) -> str | None:
        """``ROW(terms) > ROW(last terms)`` (``<`` descending) when every key sorts the same
        way and none can be NULL (``owner``); PostgreSQL compares rows term by term, the
        same order as ``ORDER BY``, and scans an index on the terms from that point."""
        directions = {key.descending for key in keys}
        if len(directions) != 1 or any(key.path.segments[0] in _NULLABLE_COLUMNS for key in keys):
            return None
        row: list[str] = []
        last: list[str] = []
        for key, value in zip(keys, values, strict=True):
            row += self.order_terms(key.path)
            if key.path.is_system:
                last.append(params.add(value))
            else:
                if value is not None and not isinstance(value, str):
                    raise TypeError(f"a data field's sort value is its JSON text, not {value!r}")
                last += self._sort_terms(f"{params.add(value)}::text::jsonb")
        return f"ROW({', '.join(row)}) {'<' if directions.pop() else '>'} ROW({', '.join(last)})"

    def keyset_step(
        self, path: Path, value: Scalar, descending: bool, params: Params
    ) -> tuple[list[Fragment], Fragment]:
        if path.is_system:
            return super().keyset_step(path, value, descending, params)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"a data field's sort value is its JSON text, not {value!r}")
        row = ", ".join(self._sort_terms(self.field_sql(path)))
        marker = params.add(value)
        last = ", ".join(self._sort_terms(f"{marker}::text::jsonb"))
        return [f"ROW({row}) {'<' if descending else '>'} ROW({last})"], (
            f"ROW({row}) = ROW({last})"
        )


# -- roost_lower -------------------------------------------------------------------------


def _classes() -> tuple[list[int], list[int]]:
    """Code points that are case-ignorable, and cased but not case-ignorable, as Python's
    ``str.lower`` sees them for the final sigma rule (measured with ``str.lower``)."""
    ignorable: list[int] = []
    cased: list[int] = []
    for code in range(0x110000):
        if 0xD800 <= code < 0xE000 or code == 0x3A3:
            continue
        char = chr(code)
        before = ("AΣ" + char + "B").lower()[1]
        alone = ("AΣ" + char).lower()[1]
        if before == "σ" and alone == "ς":
            ignorable.append(code)
        elif before == "σ":
            cased.append(code)
    cased.append(0x3A3)
    return ignorable, sorted(cased)


def _bracket(codes: list[int]) -> str:
    """A regular expression bracket of these code points, as ``\\Uxxxxxxxx`` ranges."""
    parts: list[str] = []
    start = previous = codes[0]
    for code in [*codes[1:], -1]:
        if code == previous + 1:
            previous = code
            continue
        parts.append(
            f"\\U{start:08X}" if start == previous else f"\\U{start:08X}-\\U{previous:08X}"
        )
        start = previous = code
    return "[" + "".join(parts) + "]"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@functools.cache
def setup_sql() -> tuple[str, ...]:
    """Statements to run once per database before compiled SQL (idempotent).

    ``roost_lower(text)``: Python's ``str.lower`` of this interpreter's Unicode version,
    exactly (final sigma, ``İ`` to ``i̇``, every one-to-one mapping); immutable, parallel
    safe and inlinable.
    """
    ignorable, cased = _classes()
    ign, cas = _bracket(ignorable), _bracket(cased)
    final_sigma = f"(?<={cas}{ign}*)\\U000003A3(?!{ign}*{cas})"
    sources: list[str] = []
    targets: list[str] = []
    multi: list[tuple[str, str]] = []
    for code in range(0x110000):
        if 0xD800 <= code < 0xE000:
            continue
        char = chr(code)
        lowered = char.lower()
        if lowered == char:
            continue
        if len(lowered) == 1:
            sources.append(char)
            targets.append(lowered)
        else:
            multi.append((char, lowered))
    text = (
        "CASE WHEN strpos(t, 'Σ') > 0"
        f" THEN regexp_replace(t, {_literal(final_sigma)}, 'ς', 'g') ELSE t END"
    )
    for char, lowered in multi:
        text = f"replace({text}, {_literal(char)}, {_literal(lowered)})"
    text = f"translate({text}, {_literal(''.join(sources))}, {_literal(''.join(targets))})"
    function = (
        f"CREATE OR REPLACE FUNCTION {LOWER_FUNCTION}(t text) RETURNS text"
        " LANGUAGE sql IMMUTABLE PARALLEL SAFE"
        f" AS $roost$ SELECT {text} $roost$"
    )
    return (function,)
