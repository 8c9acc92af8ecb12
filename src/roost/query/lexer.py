"""Turn expression text into tokens, one at a time, with their character positions.

The lexer also owns the path syntax (``read_path``), shared by filters, sort specs
and field lists so that every place accepts exactly the same field paths.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from roost.query.ast import SYSTEM_FIELDS, Segment
from roost.query.errors import ExpressionError
from roost.query.limits import (
    MAX_ARRAY_INDEX,
    MAX_NAME_LENGTH,
    MAX_PATH_SEGMENTS,
    MAX_SAFE_INTEGER,
)

KEYWORDS: frozenset[str] = frozenset({"true", "false", "null", "in"})

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_WHITESPACE = frozenset(" \t\n\r")
_OPERATOR_CHARS = frozenset("=!<>~?")
_COMPARISON_OPS = frozenset({"=", "!=", ">", ">=", "<", "<=", "~", "!~", "?="})
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n"}
_ESCAPES.update({"r": "\r", "t": "\t"})
_HEX = frozenset("0123456789abcdefABCDEF")


class TokenKind(enum.Enum):
    PATH = "path"
    STRING = "string"
    NUMBER = "number"
    TRUE = "true"
    FALSE = "false"
    NULL = "null"
    IN = "in"
    CONTEXT = "context"
    OPERATOR = "operator"
    NOT = "!"
    AND = "&&"
    OR = "||"
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    COMMA = ","
    END = "end"


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind, source text, start offset and decoded value."""

    kind: TokenKind
    text: str
    position: int
    value: object = None


def describe(char: str) -> str:
    """A character as error messages show it."""
    return repr(char) if char.isprintable() else f"U+{ord(char):04X}"


def read_path(
    text: str,
    start: int,
    *,
    max_segments: int = MAX_PATH_SEGMENTS,
    allow_system: bool = True,
) -> tuple[tuple[Segment, ...], int]:
    """Read a dotted path starting at ``start``; return its segments and end offset.

    The first segment is a name; later ones are names or array indexes. A system
    field (``id``, ``owner``, ...) must be the whole path.
    """
    match = _NAME.match(text, start)
    if match is None:
        raise ExpressionError("expected a field name", start)
    segments: list[Segment] = []
    position = start
    while True:
        if match is not None:
            name = match.group()
            if len(name) > MAX_NAME_LENGTH:
                raise ExpressionError(
                    f"field name is longer than {MAX_NAME_LENGTH} characters", position
                )
            segments.append(name)
        else:
            digits = _DIGITS.match(text, position)
            if digits is None:
                raise ExpressionError("expected a field name or array index after '.'", position)
            if len(digits.group()) > 1 and digits.group().startswith("0"):
                raise ExpressionError("array index must not have leading zeros", position)
            index = int(digits.group()) if len(digits.group()) <= 10 else MAX_ARRAY_INDEX + 1
            if index > MAX_ARRAY_INDEX:
                raise ExpressionError(f"array index is larger than {MAX_ARRAY_INDEX}", position)
            segments.append(index)
            match = digits
        if len(segments) > max_segments:
            raise ExpressionError(f"path has more than {max_segments} segments", start)
        position = match.end()
        if position < len(text) and (text[position].isalnum() or text[position] == "_"):
            raise ExpressionError(f"unexpected character {describe(text[position])}", position)
        if position >= len(text) or text[position] != ".":
            break
        position += 1
        match = _NAME.match(text, position)
    if allow_system and len(segments) > 1 and segments[0] in SYSTEM_FIELDS:
        raise ExpressionError(f"system field '{segments[0]}' has no sub-fields", start)
    return tuple(segments), position


class Lexer:
    """Produces the tokens of ``text`` on demand (so the first error found is reported)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def next(self) -> Token:
        """The next token; a token of kind END once the text is exhausted."""
        text = self.text
        position = self.position
        while position < len(text) and text[position] in _WHITESPACE:
            position += 1
        if position >= len(text):
            self.position = position
            return Token(TokenKind.END, "", position)
        char = text[position]
        if char.isascii() and char.isalpha():
            token = self._path(position)
        elif char in "\"'":
            token = self._string(position)
        elif (char.isascii() and char.isdigit()) or char == "-":
            token = self._number(position)
        elif char == "@":
            token = self._context(position)
        elif char in _OPERATOR_CHARS:
            token = self._operator(position)
        elif char in "&|":
            if text.startswith(char * 2, position):
                kind = TokenKind.AND if char == "&" else TokenKind.OR
                token = Token(kind, char * 2, position)
            else:
                raise ExpressionError(f"unexpected '{char}' (did you mean '{char * 2}'?)", position)
        elif char in "()[],":
            token = Token(TokenKind(char), char, position)
        else:
            raise ExpressionError(f"unexpected character {describe(char)}", position)
        self.position = position + len(token.text)
        return token

    def _path(self, start: int) -> Token:
        match = _NAME.match(self.text, start)
        assert match is not None
        word = match.group()
        end = match.end()
        if word in KEYWORDS:
            if end < len(self.text) and self.text[end] == ".":
                raise ExpressionError(f"'{word}' is a keyword, not a field", start)
            return Token(TokenKind(word), word, start, None)
        segments, end = read_path(self.text, start)
        return Token(TokenKind.PATH, self.text[start:end], start, segments)

    def _context(self, start: int) -> Token:
        if _NAME.match(self.text, start + 1) is None:
            raise ExpressionError("expected a name after '@'", start)
        segments, end = read_path(
            self.text, start + 1, max_segments=MAX_PATH_SEGMENTS + 2, allow_system=False
        )
        text = self.text[start:end]
        if segments[:2] == ("request", "data"):
            if len(segments) == 2:
                raise ExpressionError("expected a field after '@request.data'", start)
            return Token(TokenKind.CONTEXT, text, start, ("request.data", segments[2:]))
        name = ".".join(str(segment) for segment in segments)
        if name in ("auth.id", "auth.role", "auth.verified", "now"):
            return Token(TokenKind.CONTEXT, text, start, (name, ()))
        raise ExpressionError(
            f"unknown reference '{text}' (expected @auth.id, @auth.role, @auth.verified, "
            "@now or @request.data.<field>)",
            start,
        )

    def _number(self, start: int) -> Token:
        match = _NUMBER.match(self.text, start)
        if match is None:
            raise ExpressionError("unexpected '-' (expected a number)", start)
        end = match.end()
        if end < len(self.text) and (self.text[end].isalnum() or self.text[end] in "._"):
            raise ExpressionError("invalid number", start)
        literal = match.group()
        value: int | float
        if match.group(1) is None and match.group(2) is None:
            value = int(literal)
            if abs(value) > MAX_SAFE_INTEGER:
                raise ExpressionError(
                    "integer is outside ±9007199254740991 (write it as a string)", start
                )
        else:
            value = float(literal)
            if not math.isfinite(value):
                raise ExpressionError("number is too large", start)
        return Token(TokenKind.NUMBER, literal, start, value)

    def _operator(self, start: int) -> Token:
        end = start
        while end < len(self.text) and self.text[end] in _OPERATOR_CHARS:
            end += 1
        run = self.text[start:end]
        if run in _COMPARISON_OPS:
            return Token(TokenKind.OPERATOR, run, start, run)
        if set(run) == {"!"}:
            # "!!a = 1": one negation now, the next on the following call.
            return Token(TokenKind.NOT, "!", start)
        hint = {"==": "=", "<>": "!=", "=<": "<=", "=>": ">=", "=~": "~", "!==": "!="}.get(run)
        suffix = f"; use '{hint}'" if hint else ""
        raise ExpressionError(f"unknown operator '{run}'{suffix}", start)

    def _string(self, start: int) -> Token:
        text = self.text
        quote = text[start]
        chars: list[str] = []
        position = start + 1
        while True:
            if position >= len(text):
                raise ExpressionError("unterminated string", start)
            char = text[position]
            if char == quote:
                break
            if char == "\\":
                if position + 1 >= len(text):
                    raise ExpressionError("unterminated string", start)
                decoded, position = self._escape(position)
                chars.append(decoded)
                continue
            _check_char(char, position)
            chars.append(char)
            position += 1
        return Token(TokenKind.STRING, text[start : position + 1], start, "".join(chars))

    def _escape(self, start: int) -> tuple[str, int]:
        text = self.text
        code = text[start + 1]
        if code in _ESCAPES:
            return _ESCAPES[code], start + 2
        if code != "u":
            shown = f"'\\{code}'" if code.isprintable() else describe(code)
            raise ExpressionError(f"invalid escape {shown}", start)
        first = self._hex4(start)
        if 0xDC00 <= first <= 0xDFFF:
            raise ExpressionError("unpaired surrogate in \\u escape", start)
        if 0xD800 <= first <= 0xDBFF:
            if not text.startswith("\\u", start + 6):
                raise ExpressionError("unpaired surrogate in \\u escape", start)
            second = self._hex4(start + 6)
            if not 0xDC00 <= second <= 0xDFFF:
                raise ExpressionError("unpaired surrogate in \\u escape", start)
            char = chr(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
            return char, start + 12
        _check_char(chr(first), start)
        return chr(first), start + 6

    def _hex4(self, start: int) -> int:
        digits = self.text[start + 2 : start + 6]
        if len(digits) != 4 or not set(digits) <= _HEX:
            raise ExpressionError("\\u must be followed by four hex digits", start)
        return int(digits, 16)


def _check_char(char: str, position: int) -> None:
    if char == "\x00":
        raise ExpressionError("strings may not contain U+0000", position)
    if "\ud800" <= char <= "\udfff":
        raise ExpressionError("strings may not contain unpaired surrogates", position)


@dataclass(frozen=True, slots=True)
class PathItem:
    """One entry of a comma-separated path list (``sort=`` or ``fields=``)."""

    segments: tuple[Segment, ...]
    position: int
    descending: bool = False


def read_path_list(text: str, what: str, *, signed: bool = False) -> list[PathItem]:
    """Read ``"a, -b.c"``: paths separated by commas, optionally prefixed by ``+``/``-``."""
    items: list[PathItem] = []
    start = 0
    for raw in text.split(","):
        position = start + len(raw) - len(raw.lstrip(" "))
        start += len(raw) + 1
        item = raw.strip(" ")
        descending = False
        if signed and item[:1] in ("+", "-"):
            descending = item[0] == "-"
            item = item[1:]
            position += 1
        if not item:
            raise ExpressionError(f"expected a field name in {what}", position)
        try:
            segments, end = read_path(item, 0)
        except ExpressionError as error:
            raise ExpressionError(error.message, position + error.position) from None
        if end != len(item):
            raise ExpressionError(
                f"unexpected character {describe(item[end])} in {what}", position + end
            )
        items.append(PathItem(segments, position, descending))
    return items
