"""The syntax tree of the expression language: small frozen dataclasses.

An expression is a tree of :class:`Or`, :class:`And`, :class:`Not` and
:class:`Compare` nodes. Comparison operands are :class:`Path` (a record field),
:class:`Literal` (null, bool, number or string), :class:`ContextRef` (``@auth.id``,
``@now``, ...) and, only on the right of ``in``, :class:`ListValue`.

Parsing never builds an ``And`` or ``Or`` with fewer than two terms, and
parentheses leave no node of their own.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import TypeAlias

JSON: TypeAlias = "None | bool | int | float | str | list[JSON] | dict[str, JSON]"
"""A JSON value as Python holds it."""

Scalar: TypeAlias = None | bool | int | float | str
"""The value of a literal."""

Segment: TypeAlias = str | int
"""One step of a path: an object key, or an array index (``int``)."""

SYSTEM_FIELDS: frozenset[str] = frozenset({"id", "owner", "created", "updated", "version"})
"""Fields set by the server and stored as table columns; valid only as a whole path."""

CompareOp: TypeAlias = typing.Literal["=", "!=", ">", ">=", "<", "<=", "~", "!~", "?=", "in"]

COMPARE_OPS: tuple[CompareOp, ...] = ("=", "!=", ">", ">=", "<", "<=", "~", "!~", "?=", "in")

CONTEXT_NAMES: frozenset[str] = frozenset(
    {"auth.id", "auth.role", "auth.verified", "now", "request.data"}
)
"""The keys a caller's context mapping may hold (``@request.data.x`` walks into the last)."""


@dataclass(frozen=True, slots=True)
class Path:
    """A field of the record: ``title``, ``author.name``, ``items.0.price``."""

    segments: tuple[Segment, ...]

    @property
    def is_system(self) -> bool:
        """True for ``id``, ``owner``, ``created``, ``updated`` and ``version``."""
        return len(self.segments) == 1 and self.segments[0] in SYSTEM_FIELDS

    def __str__(self) -> str:
        return ".".join(str(segment) for segment in self.segments)


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: ``null``, ``true``, ``false``, a number or a string."""

    value: Scalar


@dataclass(frozen=True, slots=True)
class ContextRef:
    """A value supplied by the caller: ``@auth.id`` or ``@request.data.a.b``.

    ``name`` is one of :data:`CONTEXT_NAMES`; ``path`` walks into the value
    (only ``request.data`` has one).
    """

    name: str
    path: tuple[Segment, ...] = ()


Operand: TypeAlias = Path | Literal | ContextRef


@dataclass(frozen=True, slots=True)
class ListValue:
    """``[a, b, c]``: the right side of ``in``."""

    items: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right``; ``right`` is a :class:`ListValue` exactly when ``op`` is ``in``."""

    op: CompareOp
    left: Operand
    right: Operand | ListValue


@dataclass(frozen=True, slots=True)
class Not:
    """``!operand``."""

    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    """``a && b && ...`` (two or more terms)."""

    terms: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """``a || b || ...`` (two or more terms)."""

    terms: tuple[Expr, ...]


Expr: TypeAlias = Compare | Not | And | Or
