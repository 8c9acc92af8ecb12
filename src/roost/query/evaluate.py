"""Evaluate an expression against one record in Python.

This module is the definition of the language's meaning; ``sql.py`` compiles the
same meaning to SQL and the property tests hold the two to exact agreement.

- A missing field, or a path through a non-container, is null.
- Kinds: null, bool, number (int/float, never bool), string, array, object.
- ``a = b``: same kind among null/bool/number/string and equal (``1 = 1.0``);
  arrays and objects are never equal to anything. ``!=`` is ``!(a = b)``.
- ``< <= > >=``: both numbers or both strings (code point order); otherwise false.
- ``a ~ b``: both strings and ``b.lower()`` occurs in ``a.lower()``. ``!~`` is ``!(a ~ b)``.
- ``a ?= b``: ``a`` is an array with an element ``e`` such that ``e = b``.
- ``a in [x, y]``: ``a = x || a = y``; an empty list matches nothing.
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

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
    Segment,
)

Kind: TypeAlias = typing.Literal["null", "bool", "number", "string", "array", "object"]

_ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

SCALAR_KINDS: tuple[Kind, ...] = ("null", "bool", "number", "string")
"""The kinds ``=`` can match; arrays and objects never compare equal."""


def kind_of(value: object) -> Kind:
    """The language kind of a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def walk(value: JSON, segments: tuple[Segment, ...]) -> JSON:
    """Follow ``segments`` into ``value``; anything missing or not a container is null."""
    for segment in segments:
        if isinstance(segment, int):
            if not isinstance(value, list) or segment >= len(value):
                return None
            value = value[segment]
        else:
            if not isinstance(value, dict):
                return None
            value = value.get(segment)
    return value


def resolve_context(ref: ContextRef, context: Mapping[str, JSON]) -> JSON:
    """The value of ``@name.path`` in ``context``; a missing key is null."""
    return walk(context.get(ref.name), ref.path)


def values_equal(left: JSON, right: JSON) -> bool:
    """``left = right`` of the language."""
    kind = kind_of(left)
    if kind != kind_of(right) or kind in ("array", "object"):
        return False
    return left == right


def values_ordered(op: str, left: JSON, right: JSON) -> bool:
    """``left op right`` for ``op`` in ``< <= > >=``."""
    kind = kind_of(left)
    if kind != kind_of(right) or kind not in ("number", "string"):
        return False
    return bool(_ORDER_OPS[op](left, right))


def icontains(haystack: str, needle: str) -> bool:
    """Case-insensitive containment of ``~`` (full Unicode ``str.lower``)."""
    return needle.lower() in haystack.lower()


def values_contain(left: JSON, right: JSON) -> bool:
    """``left ~ right``."""
    return isinstance(left, str) and isinstance(right, str) and icontains(left, right)


def values_any_equal(left: JSON, right: JSON) -> bool:
    """``left ?= right``."""
    return isinstance(left, list) and any(values_equal(item, right) for item in left)


def compare_values(op: str, left: JSON, right: JSON) -> bool:
    """Apply a comparison operator other than ``in`` to two values."""
    if op == "=":
        return values_equal(left, right)
    if op == "!=":
        return not values_equal(left, right)
    if op == "~":
        return values_contain(left, right)
    if op == "!~":
        return not values_contain(left, right)
    if op == "?=":
        return values_any_equal(left, right)
    return values_ordered(op, left, right)


def operand_value(
    operand: Operand, record: Mapping[str, JSON], context: Mapping[str, JSON]
) -> JSON:
    """The value an operand takes for ``record`` under ``context``."""
    if isinstance(operand, Literal):
        return operand.value
    if isinstance(operand, ContextRef):
        return resolve_context(operand, context)
    first, rest = operand.segments[0], operand.segments[1:]
    return walk(record.get(str(first)), rest)


def evaluate(
    expr: Expr, record: Mapping[str, JSON], context: Mapping[str, JSON] | None = None
) -> bool:
    """Whether ``record`` (a flat record: system fields plus data) satisfies ``expr``."""
    ctx: Mapping[str, JSON] = context if context is not None else {}
    if isinstance(expr, Compare):
        left = operand_value(expr.left, record, ctx)
        if isinstance(expr.right, ListValue):
            return any(
                values_equal(left, operand_value(item, record, ctx)) for item in expr.right.items
            )
        return compare_values(expr.op, left, operand_value(expr.right, record, ctx))
    if isinstance(expr, Not):
        return not evaluate(expr.operand, record, ctx)
    if isinstance(expr, And):
        return all(evaluate(term, record, ctx) for term in expr.terms)
    if isinstance(expr, Or):
        return any(evaluate(term, record, ctx) for term in expr.terms)
    raise TypeError(f"not an expression: {expr!r}")
