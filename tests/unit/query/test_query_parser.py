from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.query.ast import (
    And,
    Compare,
    CompareOp,
    ContextRef,
    Expr,
    ListValue,
    Literal,
    Not,
    Or,
    Path,
)
from roost.query.errors import ExpressionError
from roost.query.limits import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_LIST_ITEMS,
    MAX_PATH_SEGMENTS,
    MAX_TERMS,
)
from roost.query.parser import parse
from roost.query.render import render


def eq(path: str, value: object) -> Compare:
    return Compare("=", Path(tuple(path.split("."))), Literal(value))  # type: ignore[arg-type]


NUMERIC_OPS: list[CompareOp] = ["!=", ">", ">=", "<", "<="]

GOOD: list[tuple[str, Expr]] = [
    ('title = "x"', eq("title", "x")),
    ("title='x'", eq("title", "x")),
    ("  title\t=\n'x'  ", eq("title", "x")),
    ("n = 1", eq("n", 1)),
    ("n = -1.5e3", eq("n", -1500.0)),
    ("n = 1E+2", eq("n", 100.0)),
    ("n = 9007199254740991", eq("n", 2**53 - 1)),
    ("n = -9007199254740991", eq("n", -(2**53 - 1))),
    ("done = true", eq("done", True)),
    ("done = false", eq("done", False)),
    ("x = null", eq("x", None)),
    ("intro = null", eq("intro", None)),
    ("nullable = 1", eq("nullable", 1)),
    ("items.0.name = 'a'", Compare("=", Path(("items", 0, "name")), Literal("a"))),
    ("a.b.c.d.e.f.g.h = 1", eq("a.b.c.d.e.f.g.h", 1)),
    ("a.true = 1", eq("a.true", 1)),
    ("owner = @auth.id", Compare("=", Path(("owner",)), ContextRef("auth.id"))),
    ("@auth.role = 'admin'", Compare("=", ContextRef("auth.role"), Literal("admin"))),
    ("@auth.verified = true", Compare("=", ContextRef("auth.verified"), Literal(True))),
    ("created < @now", Compare("<", Path(("created",)), ContextRef("now"))),
    (
        "a = @request.data.b.0",
        Compare("=", Path(("a",)), ContextRef("request.data", ("b", 0))),
    ),
    (
        'title = "\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\\'"',
        eq("title", "\"\\/\b\f\n\r\té\U0001f600'"),
    ),
    ("title = 'it\\'s'", eq("title", "it's")),
    ('title = "it\'s"', eq("title", "it's")),
    ("title = 'Ünïcødé 😀'", eq("title", "Ünïcødé 😀")),
    ("1 = 1", Compare("=", Literal(1), Literal(1))),
    ("a = b", Compare("=", Path(("a",)), Path(("b",)))),
    *[(f"a {op} 1", Compare(op, Path(("a",)), Literal(1))) for op in NUMERIC_OPS],
    ("a ~ 'x'", Compare("~", Path(("a",)), Literal("x"))),
    ("a !~ 'x'", Compare("!~", Path(("a",)), Literal("x"))),
    ("tags ?= 'x'", Compare("?=", Path(("tags",)), Literal("x"))),
    ("a in []", Compare("in", Path(("a",)), ListValue(()))),
    (
        "a in [1, 'x', null, true, @auth.id, b]",
        Compare(
            "in",
            Path(("a",)),
            ListValue(
                (
                    Literal(1),
                    Literal("x"),
                    Literal(None),
                    Literal(True),
                    ContextRef("auth.id"),
                    Path(("b",)),
                )
            ),
        ),
    ),
    ("a=1&&b=2", And((eq("a", 1), eq("b", 2)))),
    ("a=1||b=2&&c=3", Or((eq("a", 1), And((eq("b", 2), eq("c", 3)))))),
    ("(a=1||b=2)&&c=3", And((Or((eq("a", 1), eq("b", 2))), eq("c", 3)))),
    ("((a = 1))", eq("a", 1)),
    ("!a = 1", Not(eq("a", 1))),
    ("!!a = 1", Not(Not(eq("a", 1)))),
    ("!(a=1&&b=2)", Not(And((eq("a", 1), eq("b", 2))))),
    ("!(a=1)&&!(b=2)", And((Not(eq("a", 1)), Not(eq("b", 2))))),
    ("a=1 && b=2 && c=3", And((eq("a", 1), eq("b", 2), eq("c", 3)))),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_parses(text: str, expected: Expr) -> None:
    result = parse(text)
    assert result == expected
    assert repr(result) == repr(expected)  # bool vs int vs float kept apart
    assert parse(render(result)) == result


BAD: list[tuple[str, int, str]] = [
    ("", 0, "expected an expression"),
    ("   ", 3, "expected an expression"),
    ("title", 5, "expected an operator after 'title'"),
    ("title 'x'", 6, "expected an operator after 'title'"),
    ("a == 1", 2, "unknown operator '=='"),
    ("a <> 1", 2, "unknown operator '<>'"),
    ("a => 1", 2, "unknown operator '=>'"),
    ("a ? 1", 2, "unknown operator '?'"),
    ("a = 1 & b = 2", 6, "did you mean '&&'"),
    ("a = 1 | b = 2", 6, "did you mean '||'"),
    ("a = 'abc", 4, "unterminated string"),
    ('a = "abc\\', 4, "unterminated string"),
    ("a = 'x\\q'", 6, "invalid escape"),
    ("a = 'x\\u12'", 6, "four hex digits"),
    ("a = '\\ud800'", 5, "unpaired surrogate"),
    ("a = '\\udc00'", 5, "unpaired surrogate"),
    ("a = '\\ud800\\u0041'", 5, "unpaired surrogate"),
    ("a = '\\u0000'", 5, "U+0000"),
    ("a = 'x\x00'", 6, "U+0000"),
    ("a = '\ud800'", 5, "unpaired surrogates"),
    ("a = 1 b = 2", 6, "expected '&&', '||'"),
    ("a = 1)", 5, "unmatched ')'"),
    ("(a = 1", 6, "expected ')'"),
    ("()", 1, "expected a comparison"),
    ("a = ", 4, "expected a value after '='"),
    ("= 1", 0, "expected a comparison"),
    ("&& a = 1", 0, "expected a comparison"),
    ("a = 1 &&", 8, "expected a comparison"),
    ("a = 1 ||", 8, "expected a comparison"),
    ("a = [1]", 4, "only allowed after 'in'"),
    ("[1] in [1]", 0, "only allowed after 'in'"),
    ("a in 1", 5, "'in' must be followed by a list"),
    ("a in @auth.id", 5, "'in' must be followed by a list"),
    ("a in [1, [2]]", 9, "cannot be nested"),
    ("a in [1,]", 8, "expected a list item"),
    ("a in [1 2]", 8, "expected ',' or ']'"),
    ("a in [1", 7, "expected ',' or ']'"),
    ("id.x = 1", 0, "system field 'id' has no sub-fields"),
    ("owner.name = 1", 0, "system field 'owner'"),
    ("true.x = 1", 0, "keyword"),
    ("true true", 5, "expected an operator after 'true'"),
    ("a. = 1", 2, "expected a field name or array index"),
    ("a.-1 = 1", 2, "expected a field name or array index"),
    ("a.01 = 1", 2, "leading zeros"),
    ("a.99999999999 = 1", 2, "array index is larger"),
    ("a.b.c.d.e.f.g.h.i = 1", 0, f"more than {MAX_PATH_SEGMENTS} segments"),
    ("a" * 65 + " = 1", 0, "longer than 64"),
    ("_a = 1", 0, "unexpected character '_'"),
    ("é = 1", 0, "unexpected character 'é'"),
    ("aé = 1", 1, "unexpected character 'é'"),
    ("0a = 1", 0, "invalid number"),
    ("a = 1.", 4, "invalid number"),
    ("a = .5", 4, "unexpected character '.'"),
    ("a = -x", 4, "expected a number"),
    ("a = 9007199254740992", 4, "outside"),
    ("a = -9007199254740992", 4, "outside"),
    ("a = 1e999", 4, "too large"),
    ("a = @", 4, "expected a name after '@'"),
    ("a = @auth", 4, "unknown reference '@auth'"),
    ("a = @auth.email", 4, "unknown reference"),
    ("a = @request.data", 4, "expected a field after '@request.data'"),
    ("a = @request.body.x", 4, "unknown reference"),
    ("a = @now.x", 4, "unknown reference"),
    ("a = 1 ;", 6, "unexpected character ';'"),
    ("a = 1 -- x", 6, "expected a number"),
    ("!", 1, "expected a comparison"),
    ("a ! = 1", 2, "expected an operator"),
]


@pytest.mark.parametrize(("text", "position", "message"), BAD)
def test_rejects(text: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert message in caught.value.message
    assert caught.value.position == position
    assert str(caught.value) == f"position {position}: {caught.value.message}"
    assert isinstance(caught.value, ValueError)


def test_error_message_format() -> None:
    with pytest.raises(ExpressionError) as caught:
        parse("status = 'x' && title")
    assert str(caught.value) == (
        "position 21: expected an operator after 'title', found the end of the expression"
    )


def test_length_limit() -> None:
    text = "a = '" + "x" * (MAX_FILTER_LENGTH - 6) + "'"
    assert len(text) == MAX_FILTER_LENGTH
    parse(text)
    with pytest.raises(ExpressionError, match="longer than") as caught:
        parse(text + " ")
    assert caught.value.position == MAX_FILTER_LENGTH


def test_depth_limit() -> None:
    parse("(" * MAX_DEPTH + "a = 1" + ")" * MAX_DEPTH)
    parse("!" * MAX_DEPTH + "a = 1")
    parse("!(" * (MAX_DEPTH // 2) + "a = 1" + ")" * (MAX_DEPTH // 2))
    with pytest.raises(ExpressionError, match="nested") as caught:
        parse("(" * (MAX_DEPTH + 1) + "a = 1" + ")" * (MAX_DEPTH + 1))
    assert caught.value.position == MAX_DEPTH
    with pytest.raises(ExpressionError, match="nested"):
        parse("!" * (MAX_DEPTH + 1) + "a = 1")
    with pytest.raises(ExpressionError, match="nested"):
        parse("(" * 4000)  # far deeper than the stack allows: still a clean error
    with pytest.raises(ExpressionError):
        parse("!" * MAX_FILTER_LENGTH)


def test_terms_limit() -> None:
    parse(" && ".join(["a = 1"] * MAX_TERMS))
    with pytest.raises(ExpressionError, match="more than 64 comparisons") as caught:
        parse(" || ".join(["a = 1"] * (MAX_TERMS + 1)))
    assert caught.value.position == MAX_TERMS * len("a = 1 || ")


def test_list_limit() -> None:
    parse("a in [" + ", ".join(["1"] * MAX_LIST_ITEMS) + "]")
    with pytest.raises(ExpressionError, match="more than 100 items"):
        parse("a in [" + ", ".join(["1"] * (MAX_LIST_ITEMS + 1)) + "]")


def test_system_fields_are_single_segments() -> None:
    for name in ["id", "owner", "created", "updated", "version"]:
        assert parse(f"{name} = 1") == eq(name, 1)
        assert parse(f"{name} = 1").left.is_system  # type: ignore[union-attr]
        with pytest.raises(ExpressionError):
            parse(f"{name}.x = 1")
    assert not Path(("ids",)).is_system


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_parse_fuzz_text(text: str) -> None:
    try:
        parse(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)


_PIECES = [
    "a", "b.c", "items.0", "id", "owner", "@auth.id", "@request.data.x", "@now", "1", "-2.5",
    "1e3", "'s'", '"\\u00e9"', "true", "false", "null", "in", "[", "]", ",", "(", ")", "!",
    "&&", "||", "=", "!=", "<", "<=", ">", ">=", "~", "!~", "?=", " ", "'", "\\", "@",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30))
def test_parse_fuzz_tokens(pieces: list[str]) -> None:
    text = " ".join(pieces)
    try:
        expr = parse(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert parse(render(expr)) == expr
