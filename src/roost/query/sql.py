"""Compile an expression to a parameterised SQL ``WHERE`` fragment.

The SQL selects exactly the rows :func:`roost.query.evaluate.evaluate` accepts:

- **No user text in SQL.** Literals and context values become bound parameters.
  Paths are validated by the grammar and rendered by the dialect as constant JSON
  paths, identical to the expressions that indexes are created on.
- **Two-valued logic.** Every fragment the compiler builds is *true exactly when the
  language says true*; when the language says false it may be false or NULL. That
  property survives ``AND`` and ``OR`` unchanged, and ``!`` becomes
  ``(x) IS NOT TRUE``, which is true exactly when ``x`` is false or NULL. So SQL's
  three-valued logic never changes an answer.
- **Kinds are checked.** Each comparison is the disjunction, over the kinds both sides
  may have, of "both sides have this kind and the values compare". Kinds known at
  compile time (literals, context values, system columns) prune the disjunction, so
  ``title = "x"`` compiles to ``json_type(...) = 'text' AND json_extract(...) = ?``,
  which an index on ``json_extract(data, '$.title')`` answers.

A new database is supported by subclassing :class:`Dialect`; the compiler itself is
shared.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, TypeAlias
from typing import Literal as TypingLiteral

from roost.query.ast import (
    JSON,
    And,
    Compare,
    ContextRef,
    Expr,
    ListValue,
    Literal,
    Not,
    Operand,
    Or,
    Path,
    Scalar,
)
from roost.query.evaluate import (
    SCALAR_KINDS,
    Kind,
    compare_values,
    kind_of,
    resolve_context,
    values_equal,
)
from roost.query.parser import parse_path

if TYPE_CHECKING:
    from roost.query.sort import SortKey

SYSTEM_FIELD_KINDS: Mapping[str, tuple[Kind, ...]] = {
    "id": ("string",),
    "owner": ("null", "string"),
    "created": ("string",),
    "updated": ("string",),
    "version": ("number",),
}
"""The kinds each system column can hold (``owner`` is NULL for unowned records)."""

_ALL_KINDS: tuple[Kind, ...] = ("null", "bool", "number", "string", "array", "object")
_MARKER = re.compile("\x00([0-9]+)\x00")

SQLFunction: TypeAlias = Callable[..., "int | float | str | bytes | None"]
"""A Python function callable from SQL."""

Fragment: TypeAlias = str | bool
"""A SQL condition under construction, or a constant the compiler already knows."""

Source: TypeAlias = TypingLiteral["static", "column", "data"]
"""Where one side of a comparison comes from: a bound value, a system column, record data."""


class Dialect(ABC):
    """How one database spells the pieces the compiler needs.

    Data paths are the non-system paths; system fields are plain columns and
    :meth:`field_sql` names them.
    """

    true_sql = "TRUE"
    false_sql = "FALSE"

    @abstractmethod
    def placeholder(self, index: int) -> str:
        """The placeholder of the ``index``-th parameter (1-based): ``?`` or ``$1``."""

    @abstractmethod
    def data_sql(self, path: Path) -> str:
        """The SQL value of a data (non-system) path, as :meth:`field_sql` returns it."""

    def column_sql(self, name: str) -> str:
        """The SQL name of a system field's column."""
        return name

    def field_sql(self, path: Path | str) -> str:
        """The SQL value of a field path (a :class:`Path` or its dotted text).

        Indexes on a field must be created on exactly this expression.
        """
        if isinstance(path, str):
            path = parse_path(path)
        if path.is_system:
            return self.column_sql(str(path.segments[0]))
        return self.data_sql(path)

    def functions(self) -> Sequence[tuple[str, int, SQLFunction]]:
        """SQL functions compiled SQL calls, ``(name, arguments, function)``.

        Register each one, as deterministic, on every connection.
        """
        return ()

    @abstractmethod
    def null_test(self, path: Path) -> str:
        """A condition true iff the data path is missing or JSON null."""

    @abstractmethod
    def kind_test(self, path: Path, kind: Kind) -> str:
        """A condition true iff the data path holds a value of ``kind`` (never ``null``)."""

    @abstractmethod
    def array_contains(self, path: Path, kind: Kind, value_sql: str | None) -> str:
        """True iff the array at the data path has an element of ``kind`` equal to the value.

        ``value_sql`` is None for ``kind == "null"``. The caller has already checked
        that the path holds an array. ``value_sql`` may refer to the outer row.
        """

    @abstractmethod
    def icontains(self, haystack_sql: str, needle_sql: str) -> str:
        """A condition true iff both are strings and ``icontains`` holds (see ``~``)."""

    def value_sql(self, path: Path, kind: Kind) -> str:
        """The value of a data path for comparing with another value of ``kind``."""
        return self.field_sql(path)

    def operand_sql(self, sql: str, source: Source, kind: Kind, op: str, other: Source) -> str:
        """One side of a comparison of values of ``kind`` with operator ``op``.

        ``sql`` is a placeholder (``static``), the column (``column``) or
        :meth:`value_sql` (``data``); ``other`` is where the other side comes from
        (``op`` is ``"?="`` for the value sought in an array, ``other`` then ``"data"``).
        A dialect whose types depend on both sides (PostgreSQL) converts here.
        """
        return sql

    def typed_equality(self, source: Source, other: Source) -> bool:
        """True when ``=`` between these operands is already false across kinds, so the
        compiler leaves out the kind tests (which also hide the operand from the planner's
        statistics). False by default: SQLite's ``json_extract`` turns JSON ``true`` into
        ``1`` and an object into its text."""
        return False

    def bind(self, value: Scalar) -> object:
        """A literal or context value as the driver should receive it."""
        return value

    def is_not_true(self, condition: str) -> str:
        """A condition true iff ``condition`` is false or NULL."""
        return f"(({condition}) IS NOT TRUE)"

    def record_json_sql(self) -> str | None:
        """SQL giving a record row's public JSON text (the system fields, then the data's),
        where the stored data is exactly the JSON Roost wrote; None (the default) to build
        it in Python."""
        return None

    def null_safe_equal(self, left: str, right: str) -> str:
        """``left`` equals ``right``, where NULL equals NULL."""
        return f"{left} IS NOT DISTINCT FROM {right}"

    def sort_sql(self, path: Path) -> str:
        """The expression sorted on and compared by keyset pagination."""
        return self.field_sql(path)

    def order_term(self, path: Path, descending: bool) -> str:
        """One ``ORDER BY`` term: NULL first ascending, last descending."""
        return f"{self.sort_sql(path)} {'DESC' if descending else 'ASC'}"

    def keyset_row(
        self, keys: Sequence[SortKey], values: Sequence[Scalar], params: Params
    ) -> str | None:
        """The whole keyset condition as one row comparison, which an index on the sort
        terms answers with a range scan; None (the default) to combine :meth:`keyset_step`
        conditions instead."""
        return None

    def keyset_step(
        self, path: Path, value: Scalar, descending: bool, params: Params
    ) -> tuple[list[Fragment], Fragment]:
        """For keyset pagination on one sort key: the conditions "this row sorts strictly
        after ``value`` on this key" (any of them) and "this row ties with ``value``".

        ``value`` is what the database returned for :meth:`sort_sql` (None for NULL).
        """
        column = self.sort_sql(path)
        if value is None:
            if descending:
                return [], f"{column} IS NULL"
            return [f"{column} IS NOT NULL"], f"{column} IS NULL"
        beyond: list[Fragment] = [f"{column} {'<' if descending else '>'} {params.add(value)}"]
        if descending:
            beyond.append(f"{column} IS NULL")
        return beyond, self.null_safe_equal(column, params.add(value))


class Params:
    """Collects bound values; placeholders are numbered in text order by :meth:`finish`."""

    def __init__(self) -> None:
        self._values: list[object] = []

    def add(self, value: object) -> str:
        """A marker standing for ``value`` in SQL under construction."""
        self._values.append(value)
        return f"\x00{len(self._values) - 1}\x00"

    def finish(self, sql: str, dialect: Dialect) -> tuple[str, list[object]]:
        """Replace markers by the dialect's placeholders; return the SQL and parameters."""
        ordered: list[object] = []

        def replace(match: re.Match[str]) -> str:
            ordered.append(self._values[int(match.group(1))])
            return dialect.placeholder(len(ordered))

        return _MARKER.sub(replace, sql), ordered


def sql_and(parts: Iterable[Fragment]) -> Fragment:
    """Conjunction, folding constants."""
    texts: list[str] = []
    for part in parts:
        if part is False:
            return False
        if part is not True:
            texts.append(str(part))
    if not texts:
        return True
    return texts[0] if len(texts) == 1 else "(" + " AND ".join(texts) + ")"


def sql_or(parts: Iterable[Fragment]) -> Fragment:
    """Disjunction, folding constants."""
    texts: list[str] = []
    for part in parts:
        if part is True:
            return True
        if part is not False:
            texts.append(str(part))
    if not texts:
        return False
    return texts[0] if len(texts) == 1 else "(" + " OR ".join(texts) + ")"


def finish_fragment(fragment: Fragment, dialect: Dialect) -> str:
    """SQL text of a fragment, constants included."""
    if fragment is True:
        return dialect.true_sql
    if fragment is False:
        return dialect.false_sql
    return str(fragment)


def compile_filter(
    expr: Expr, dialect: Dialect, context: Mapping[str, JSON] | None = None
) -> tuple[str, list[object]]:
    """A ``WHERE`` fragment selecting the rows ``expr`` accepts, and its parameters.

    The fragment is safe to combine with ``AND``; context values are bound, never inlined.
    """
    params = Params()
    compiler = _Compiler(dialect, params, context if context is not None else {})
    return params.finish(finish_fragment(compiler.compile(expr), dialect), dialect)


PER_REQUEST = frozenset({"now", "request.data"})
"""Context values that differ on nearly every request: a filter reading one is compiled
each time."""


def compile_filter_cached(
    expr: Expr, dialect: Dialect, context: Mapping[str, JSON]
) -> tuple[str, list[object]]:
    """:func:`compile_filter`, remembered per expression, dialect and the context values
    it reads (``@auth.id``, ...): the same rule for the same caller compiles once."""
    names = context_names(expr)
    if PER_REQUEST.intersection(names):
        return compile_filter(expr, dialect, context)
    sql, params = _compiled(expr, dialect, names, tuple(context.get(name) for name in names))
    return sql, list(params)


@lru_cache(maxsize=4096)
def _compiled(
    expr: Expr, dialect: Dialect, names: tuple[str, ...], values: tuple[JSON, ...]
) -> tuple[str, tuple[object, ...]]:
    sql, params = compile_filter(expr, dialect, dict(zip(names, values, strict=True)))
    return sql, tuple(params)


@lru_cache(maxsize=4096)
def context_names(expr: Expr) -> tuple[str, ...]:
    """The context values ``expr`` reads, sorted."""
    found: set[str] = set()
    stack: list[Expr] = [expr]
    while stack:
        item = stack.pop()
        if isinstance(item, And | Or):
            stack.extend(item.terms)
        elif isinstance(item, Not):
            stack.append(item.operand)
        else:
            right = item.right.items if isinstance(item.right, ListValue) else (item.right,)
            found.update(op.name for op in (item.left, *right) if isinstance(op, ContextRef))
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class _Static:
    """A value known at compile time: a literal or a context value."""

    value: JSON

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return (kind_of(self.value),)


@dataclass(frozen=True, slots=True)
class _Column:
    """A system field stored as its own column."""

    name: str
    sql: str

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return SYSTEM_FIELD_KINDS[self.name]


@dataclass(frozen=True, slots=True)
class _Data:
    """A path into the record's JSON data."""

    path: Path

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return _ALL_KINDS


_Side: TypeAlias = _Static | _Column | _Data


def _source(side: _Side) -> Source:
    if isinstance(side, _Static):
        return "static"
    return "column" if isinstance(side, _Column) else "data"


_Condition: TypeAlias = Callable[[str, str], str]


class _Compiler:
    def __init__(self, dialect: Dialect, params: Params, context: Mapping[str, JSON]) -> None:
        self.dialect = dialect
        self.params = params
        self.context = context

    def compile(self, expr: Expr) -> Fragment:
        if isinstance(expr, Compare):
            return self._compare(expr)
        if isinstance(expr, Not):
            inner = self.compile(expr.operand)
            return (not inner) if isinstance(inner, bool) else self.dialect.is_not_true(inner)
        if isinstance(expr, And):
            return sql_and([self.compile(term) for term in expr.terms])
        if isinstance(expr, Or):
            return sql_or([self.compile(term) for term in expr.terms])
        raise TypeError(f"not an expression: {expr!r}")

    def _side(self, operand: Operand) -> _Side:
        if isinstance(operand, Literal):
            return _Static(operand.value)
        if isinstance(operand, ContextRef):
            return _Static(resolve_context(operand, self.context))
        if operand.is_system:
            return _Column(str(operand.segments[0]), self.dialect.field_sql(operand))
        return _Data(operand)

    def _null(self, side: _Side) -> Fragment:
        if isinstance(side, _Static):
            return side.value is None
        if isinstance(side, _Column):
            return f"{side.sql} IS NULL"
        return self.dialect.null_test(side.path)

    def _kind(self, side: _Side, kind: Kind) -> Fragment:
        # Only used together with a comparison of _value(side, kind), which is NULL
        # (so not true) whenever a column is NULL: column kinds need no test.
        if isinstance(side, _Data):
            return self.dialect.kind_test(side.path, kind)
        return True

    def _value(self, side: _Side, kind: Kind, op: str, other: _Side) -> str:
        sql: str
        if isinstance(side, _Static):
            assert not isinstance(side.value, list | dict)
            sql = self.params.add(self.dialect.bind(side.value))
        elif isinstance(side, _Column):
            sql = side.sql
        else:
            sql = self.dialect.value_sql(side.path, kind)
        return self.dialect.operand_sql(sql, _source(side), kind, op, _source(other))

    def _compare(self, expr: Compare) -> Fragment:
        left = self._side(expr.left)
        if isinstance(expr.right, ListValue):
            return sql_or([self._equal(left, self._side(item)) for item in expr.right.items])
        right = self._side(expr.right)
        op = expr.op
        if isinstance(left, _Static) and isinstance(right, _Static):
            return compare_values(op, left.value, right.value)
        if op in ("=", "!="):
            equal = self._equal(left, right)
            if op == "=" or isinstance(equal, bool):
                return equal if op == "=" else not equal
            return self.dialect.is_not_true(equal)
        if op in ("~", "!~"):
            contains = self._typed(left, right, ("string",), self.dialect.icontains, "~")
            if op == "~" or isinstance(contains, bool):
                return contains if op == "~" else not contains
            return self.dialect.is_not_true(contains)
        if op == "?=":
            return self._any_equal(left, right)
        return self._typed(left, right, ("number", "string"), lambda a, b: f"{a} {op} {b}", op)

    def _typed(
        self,
        left: _Side,
        right: _Side,
        kinds: tuple[Kind, ...],
        condition: _Condition,
        op: str,
    ) -> Fragment:
        terms: list[Fragment] = []
        typed = op == "=" and self.dialect.typed_equality(_source(left), _source(right))
        for kind in kinds:
            if kind in left.kinds and kind in right.kinds:
                compared = condition(
                    self._value(left, kind, op, right), self._value(right, kind, op, left)
                )
                if typed:
                    terms.append(compared)
                else:
                    terms.append(
                        sql_and([self._kind(left, kind), self._kind(right, kind), compared])
                    )
        return sql_or(terms)

    def _equal(self, left: _Side, right: _Side) -> Fragment:
        if isinstance(left, _Static) and isinstance(right, _Static):
            return values_equal(left.value, right.value)
        terms: list[Fragment] = []
        if "null" in left.kinds and "null" in right.kinds:
            terms.append(sql_and([self._null(left), self._null(right)]))
        terms.append(self._typed(left, right, SCALAR_KINDS[1:], lambda a, b: f"{a} = {b}", "="))
        return sql_or(terms)

    def _any_equal(self, left: _Side, right: _Side) -> Fragment:
        if isinstance(left, _Static):
            if not isinstance(left.value, list):
                return False
            return sql_or([self._equal(_Static(item), right) for item in left.value])
        if not isinstance(left, _Data):
            return False
        terms: list[Fragment] = []
        for kind in SCALAR_KINDS:
            if kind not in right.kinds:
                continue
            if kind == "null":
                found = self.dialect.array_contains(left.path, kind, None)
                terms.append(sql_and([self._null(right), found]))
            else:
                value = self._value(right, kind, "?=", left)
                found = self.dialect.array_contains(left.path, kind, value)
                terms.append(sql_and([self._kind(right, kind), found]))
        return sql_and([self.dialect.kind_test(left.path, "array"), sql_or(terms)])
