"""Parse expression text into a syntax tree.

Grammar (whitespace may separate any two tokens)::

    expr    := and ("||" and)*
    and     := unary ("&&" unary)*
    unary   := "!" unary | "(" expr ")" | operand OP operand | operand "in" list
    OP      := "=" | "!=" | ">" | ">=" | "<" | "<=" | "~" | "!~" | "?="
    list    := "[" (operand ("," operand)*)? "]"
    operand := path | string | number | "true" | "false" | "null"
             | "@auth.id" | "@auth.role" | "@auth.verified" | "@now" | "@request.data." path

Recursion is bounded: every ``(`` and ``!`` counts against ``MAX_DEPTH`` before the
parser descends, so no input can exhaust the Python stack.
"""

from __future__ import annotations

from typing import cast

from roost.query.ast import (
    And,
    Compare,
    CompareOp,
    ContextRef,
    Expr,
    ListValue,
    Literal,
    Not,
    Operand,
    Or,
    Path,
    Segment,
)
from roost.query.errors import ExpressionError
from roost.query.lexer import Lexer, Token, TokenKind, describe, read_path
from roost.query.limits import MAX_DEPTH, MAX_FILTER_LENGTH, MAX_LIST_ITEMS, MAX_TERMS

_OPERAND_KINDS = frozenset(
    {
        TokenKind.PATH,
        TokenKind.STRING,
        TokenKind.NUMBER,
        TokenKind.TRUE,
        TokenKind.FALSE,
        TokenKind.NULL,
        TokenKind.CONTEXT,
    }
)


def parse(text: str) -> Expr:
    """Parse a filter or rule expression; raise :class:`ExpressionError` if it is invalid."""
    if len(text) > MAX_FILTER_LENGTH:
        raise ExpressionError(
            f"expression is longer than {MAX_FILTER_LENGTH} characters", MAX_FILTER_LENGTH
        )
    return _Parser(text).parse()


def parse_path(text: str) -> Path:
    """Parse a whole text as one field path (``author.name``, ``items.0``, ``id``)."""
    if len(text) > MAX_FILTER_LENGTH:
        raise ExpressionError(
            f"path is longer than {MAX_FILTER_LENGTH} characters", MAX_FILTER_LENGTH
        )
    segments, end = read_path(text, 0)
    if end != len(text):
        raise ExpressionError(f"unexpected character {describe(text[end])}", end)
    return Path(segments)


def _shown(token: Token) -> str:
    if token.kind is TokenKind.END:
        return "the end of the expression"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return f"'{text}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self._lexer = Lexer(text)
        self._token = self._lexer.next()
        self._terms = 0

    def parse(self) -> Expr:
        if self._at(TokenKind.END):
            raise ExpressionError("expected an expression", self._token.position)
        expr = self._expr(0)
        if self._at(TokenKind.RPAREN):
            raise ExpressionError("unmatched ')'", self._token.position)
        if not self._at(TokenKind.END):
            raise ExpressionError(
                f"expected '&&', '||' or the end of the expression, found {_shown(self._token)}",
                self._token.position,
            )
        return expr

    def _at(self, kind: TokenKind) -> bool:
        return self._token.kind is kind

    def _advance(self) -> Token:
        token = self._token
        self._token = self._lexer.next()
        return token

    def _expr(self, depth: int) -> Expr:
        terms = [self._and(depth)]
        while self._at(TokenKind.OR):
            self._advance()
            terms.append(self._and(depth))
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def _and(self, depth: int) -> Expr:
        terms = [self._unary(depth)]
        while self._at(TokenKind.AND):
            self._advance()
            terms.append(self._unary(depth))
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def _unary(self, depth: int) -> Expr:
        token = self._token
        if token.kind in (TokenKind.NOT, TokenKind.LPAREN):
            if depth >= MAX_DEPTH:
                raise ExpressionError(
                    f"expression is nested more than {MAX_DEPTH} levels deep", token.position
                )
            self._advance()
            if token.kind is TokenKind.NOT:
                return Not(self._unary(depth + 1))
            inner = self._expr(depth + 1)
            if not self._at(TokenKind.RPAREN):
                raise ExpressionError(
                    f"expected ')' to close the '(' at position {token.position}, "
                    f"found {_shown(self._token)}",
                    self._token.position,
                )
            self._advance()
            return inner
        return self._comparison()

    def _comparison(self) -> Compare:
        start = self._token
        left = self._operand("expected a comparison such as 'field = value'")
        operator = self._token
        if operator.kind is TokenKind.IN:
            self._advance()
            right: Operand | ListValue = self._list()
            op: CompareOp = "in"
        elif operator.kind is TokenKind.OPERATOR:
            self._advance()
            if self._at(TokenKind.LBRACKET):
                raise ExpressionError("a list is only allowed after 'in'", self._token.position)
            right = self._operand(f"expected a value after '{operator.text}'")
            op = cast(CompareOp, operator.value)
        else:
            raise ExpressionError(
                f"expected an operator after {_shown(start)}, found {_shown(operator)}",
                operator.position,
            )
        self._terms += 1
        if self._terms > MAX_TERMS:
            raise ExpressionError(
                f"expression has more than {MAX_TERMS} comparisons", start.position
            )
        return Compare(op, left, right)

    def _operand(self, expected: str) -> Operand:
        token = self._token
        if token.kind is TokenKind.LBRACKET:
            raise ExpressionError("a list is only allowed after 'in'", token.position)
        if token.kind not in _OPERAND_KINDS:
            raise ExpressionError(f"{expected}, found {_shown(token)}", token.position)
        self._advance()
        if token.kind is TokenKind.PATH:
            return Path(cast(tuple[Segment, ...], token.value))
        if token.kind is TokenKind.CONTEXT:
            name, path = cast(tuple[str, tuple[Segment, ...]], token.value)
            return ContextRef(name, path)
        if token.kind is TokenKind.TRUE:
            return Literal(True)
        if token.kind is TokenKind.FALSE:
            return Literal(False)
        if token.kind is TokenKind.NULL:
            return Literal(None)
        return Literal(cast("str | int | float", token.value))

    def _list(self) -> ListValue:
        opening = self._token
        if opening.kind is not TokenKind.LBRACKET:
            raise ExpressionError(
                f"'in' must be followed by a list such as [1, 2], found {_shown(opening)}",
                opening.position,
            )
        self._advance()
        items: list[Operand] = []
        if self._at(TokenKind.RBRACKET):
            self._advance()
            return ListValue(())
        while True:
            if len(items) >= MAX_LIST_ITEMS:
                raise ExpressionError(
                    f"list has more than {MAX_LIST_ITEMS} items", self._token.position
                )
            if self._at(TokenKind.LBRACKET):
                raise ExpressionError("lists cannot be nested", self._token.position)
            items.append(self._operand("expected a list item"))
            if self._at(TokenKind.COMMA):
                self._advance()
                continue
            if self._at(TokenKind.RBRACKET):
                self._advance()
                return ListValue(tuple(items))
            raise ExpressionError(
                f"expected ',' or ']' in the list opened at position {opening.position}, "
                f"found {_shown(self._token)}",
                self._token.position,
            )
