"""Access rules per collection and action, and the fields a caller may see.

A rule is ``None`` (admins only), ``""`` (anyone) or an expression over the record and
``@auth``/``@request.data``. Admins pass every rule. The ``list`` rule is compiled into the
query's WHERE clause, so pages, cursors and counts never reveal a row the caller may not
read; the others are evaluated in Python on the record they concern. A record the caller
may not view is reported as missing, so rules do not leak which ids exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

from roost.auth.principal import Principal
from roost.errors import Forbidden, InvalidFilter, NotFound, Unauthorized
from roost.query.ast import And, Compare, ContextRef, Expr, ListValue, Not, Operand, Or, Path
from roost.query.evaluate import evaluate
from roost.query.parser import parse
from roost.query.sql import Dialect, compile_filter_cached
from roost.records.collections import Collection
from roost.types import JSON, JSONObject

Action = Literal["list", "view", "create", "update", "delete"]


@lru_cache(maxsize=4096)
def parsed(expression: str) -> Expr:
    """The syntax tree of a rule or a client's filter, parsed once per process (clients
    repeat their filters; trees are immutable). Raises ExpressionError when invalid."""
    return parse(expression)


def _rule(collection: Collection, action: Action, principal: Principal) -> str | None:
    """The rule to apply, or None when the caller passes without one (admins, ``""``)."""
    if principal.is_admin:
        return None
    rule: str | None = getattr(collection.definition.rules, action)
    if rule == "":
        return None
    if rule is None:
        name = collection.definition.name
        if principal.id is None:
            raise Unauthorized(f"{action} on {name!r} needs a signed-in caller")
        raise Forbidden(f"{action} on {name!r} is for admins only")
    return rule


def list_clause(
    collection: Collection, principal: Principal, dialect: Dialect, context: Mapping[str, JSON]
) -> tuple[str, list[object]] | None:
    """The WHERE fragment that keeps only rows the caller may list (None: every row)."""
    rule = _rule(collection, "list", principal)
    return None if rule is None else compile_filter_cached(parsed(rule), dialect, context)


def check(
    collection: Collection,
    action: Action,
    principal: Principal,
    record: JSONObject,
    context: Mapping[str, JSON],
) -> None:
    """Raise unless ``principal`` may apply ``action`` to ``record`` (as it is now)."""
    if action in ("update", "delete"):
        check(collection, "view", principal, record, context)
    rule = _rule(collection, action, principal)
    if rule is None or evaluate(parsed(rule), record, context):
        return
    name = collection.definition.name
    if action == "view":
        raise NotFound(f"record {record.get('id')} does not exist in {name!r}")
    if principal.id is None:
        raise Unauthorized(f"{action} on {name!r} needs a signed-in caller")
    raise Forbidden(f"the {action} rule of {name!r} does not allow this")


def allows(
    collection: Collection,
    action: Action,
    principal: Principal,
    record: JSONObject,
    context: Mapping[str, JSON],
) -> bool:
    """Whether ``action``'s rule alone admits ``principal`` to ``record`` (no raising)."""
    if principal.is_admin:
        return True
    rule: str | None = getattr(collection.definition.rules, action)
    return rule is not None and (rule == "" or evaluate(parsed(rule), record, context))


def sees_hidden(principal: Principal, record: Mapping[str, Any]) -> bool:
    return principal.is_admin or (principal.id is not None and record.get("owner") == principal.id)


def sees_all_fields(collection: Collection, principal: Principal) -> bool:
    """Whether no record of ``collection`` hides a field from ``principal``."""
    return principal.is_admin or not collection.definition.hidden_fields


def strip_hidden(collection: Collection, principal: Principal, record: JSONObject) -> JSONObject:
    """``record`` without the hidden fields the caller may not see."""
    hidden = collection.definition.hidden_fields
    if not hidden or sees_hidden(principal, record):
        return record
    return {key: value for key, value in record.items() if key not in hidden}


def refuse_hidden_paths(
    collection: Collection, principal: Principal, paths: Sequence[Path]
) -> None:
    """Non-admins may not filter or sort on hidden fields: that would reveal their values."""
    hidden = collection.definition.hidden_fields
    if not hidden or principal.is_admin:
        return
    for path in paths:
        if path.segments and path.segments[0] in hidden:
            raise InvalidFilter(f"{path} is a hidden field and cannot be filtered or sorted on")


def paths_of(expr: Expr) -> Iterator[Path]:
    """Every record path an expression reads."""
    return (operand for operand in _operands(expr) if isinstance(operand, Path))


def context_names(expr: Expr) -> set[str]:
    """The caller's values an expression reads (``auth.id``, ``now``, ...)."""
    return {operand.name for operand in _operands(expr) if isinstance(operand, ContextRef)}


def _operands(expr: Expr) -> Iterator[Operand]:
    if isinstance(expr, And | Or):
        for term in expr.terms:
            yield from _operands(term)
    elif isinstance(expr, Not):
        yield from _operands(expr.operand)
    elif isinstance(expr, Compare):
        for operand in (expr.left, expr.right):
            if isinstance(operand, ListValue):
                yield from operand.items
            else:
                yield operand
