"""Turn a syntax tree back into expression text that parses to the same tree."""

from __future__ import annotations

import json
import math

from roost.query.ast import And, Compare, ContextRef, Expr, ListValue, Literal, Not, Operand, Or


def render(expr: Expr) -> str:
    """Canonical text of ``expr``: ``parse(render(expr)) == expr``."""
    if isinstance(expr, Compare):
        left = render_operand(expr.left)
        if isinstance(expr.right, ListValue):
            items = ", ".join(render_operand(item) for item in expr.right.items)
            return f"{left} {expr.op} [{items}]"
        return f"{left} {expr.op} {render_operand(expr.right)}"
    if isinstance(expr, Not):
        inner = expr.operand
        text = render(inner)
        return f"!{text}" if isinstance(inner, Compare | Not) else f"!({text})"
    if isinstance(expr, And):
        return " && ".join(
            f"({render(term)})" if isinstance(term, And | Or) else render(term)
            for term in expr.terms
        )
    return " || ".join(
        f"({render(term)})" if isinstance(term, Or) else render(term) for term in expr.terms
    )


def render_operand(operand: Operand) -> str:
    """Text of one operand."""
    if isinstance(operand, ContextRef):
        return "@" + ".".join([operand.name, *(str(segment) for segment in operand.path)])
    if not isinstance(operand, Literal):
        return str(operand)
    value = operand.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot render non-finite number {value!r}")
        return repr(value)
    return str(value)
