from __future__ import annotations

import pytest

from roost.errors import ValidationFailed
from roost.records.fields import FieldSpec, check_names, merge_patch, validate_data

SCHEMA = {
    "title": FieldSpec(type="string", required=True, max_length=5),
    "score": FieldSpec(type="integer", min=0, max=10, default=1),
    "ratio": FieldSpec(type="number"),
    "done": FieldSpec(type="boolean"),
    "meta": FieldSpec(type="object"),
    "tags": FieldSpec(type="array"),
    "due": FieldSpec(type="datetime"),
}


def test_valid_data_is_normalised_and_defaults_fill_in() -> None:
    data = validate_data(
        {"title": "hi", "due": "2026-01-02T03:04:05+02:00", "ratio": 2},
        SCHEMA,
        strict=False,
        creating=True,
    )
    assert data == {"title": "hi", "due": "2026-01-02T01:04:05.000Z", "ratio": 2, "score": 1}


def test_defaults_do_not_apply_on_update() -> None:
    assert "score" not in validate_data({"title": "x"}, SCHEMA, strict=False, creating=False)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "title", "title is required"),
        ({"title": None}, "title", "title is required"),
        ({"title": 3}, "title", "title must be a string"),
        ({"title": "toolong"}, "title", "title must be at most 5 characters"),
        ({"title": "a", "score": 1.5}, "score", "score must be an integer"),
        ({"title": "a", "score": True}, "score", "score must be an integer"),
        ({"title": "a", "score": -1}, "score", "score must be at least 0"),
        ({"title": "a", "score": 11}, "score", "score must be at most 10"),
        ({"title": "a", "ratio": "1"}, "ratio", "ratio must be a number"),
        ({"title": "a", "done": 1}, "done", "done must be true or false"),
        ({"title": "a", "meta": []}, "meta", "meta must be an object"),
        ({"title": "a", "tags": {}}, "tags", "tags must be an array"),
        ({"title": "a", "due": "2026-01-02"}, "due", "with a time zone"),
        ({"title": "a", "due": "yesterday"}, "due", "ISO 8601"),
        ({"title": "a", "big": 2**53}, "big", "2^53"),
        ({"title": "a", "deep": {"x": [1, -(2**60)]}}, "deep.x.1", "2^53"),
        ({"title": "a", "nul": "a\x00b"}, "nul", "U+0000"),
    ],
)
def test_each_violation_names_its_field(data: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_data(data, SCHEMA, strict=False, creating=True)
    errors = caught.value.extra["errors"]
    assert any(e["field"] == field and message in e["message"] for e in errors), errors


def test_strict_collections_refuse_undeclared_fields() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_data({"title": "a", "other": 1}, SCHEMA, strict=True, creating=True)
    assert caught.value.extra["errors"][0]["field"] == "other"


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_data({"score": "x", "done": 3}, SCHEMA, strict=False, creating=True)
    assert {e["field"] for e in caught.value.extra["errors"]} == {"title", "score", "done"}


def test_names() -> None:
    assert check_names({"ok_1": 1, "A": 2}) == []
    bad = check_names({"id": 1, "owner": 1, "1x": 1, "a-b": 1, "a" * 65: 1})
    assert [e["field"] for e in bad] == ["id", "owner", "1x", "a-b", "a" * 65]
    assert check_names({"id": "x"}, allow={"id"}) == []
    assert check_names({"id": "x", "owner": "u"}, allow={"id", "owner"}) == []
    assert [e["field"] for e in check_names({"id": "x", "owner": "u"}, allow={"owner"})] == ["id"]


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": None, "z": 3}}, {"a": {"x": 1, "z": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"b": {"c": None}}, {"a": 1, "b": {}}),
        ({"a": "x"}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_merge_patch_follows_rfc_7396(
    target: dict[str, object], patch: dict[str, object], result: dict[str, object]
) -> None:
    assert merge_patch(target, patch) == result


def test_values_limit_a_field_to_a_list() -> None:
    spec = {"role": FieldSpec(type="string", values=["user", "admin"])}
    assert validate_data({"role": "admin"}, spec, strict=False, creating=True) == {"role": "admin"}
    with pytest.raises(ValidationFailed) as caught:
        validate_data({"role": "root"}, spec, strict=False, creating=True)
    assert caught.value.extra["errors"][0]["message"] == "role must be one of user, admin"
    # true is not the number 1, and 1 is not true
    with pytest.raises(ValidationFailed):
        validate_data(
            {"n": True}, {"n": FieldSpec(type="number", values=[1, 2])}, strict=False, creating=True
        )
    with pytest.raises(ValueError):
        FieldSpec(type="integer", values=[1, "two"])  # every value fits the field's type
    with pytest.raises(ValueError):
        FieldSpec(type="integer", max=5, values=[1, 9])  # ... and its limits
    with pytest.raises(ValueError):
        FieldSpec(type="string", values=[])
    with pytest.raises(ValueError):
        FieldSpec(type="string", values=["a"], default="b")


def test_hidden_is_a_flag_of_the_spec() -> None:
    assert FieldSpec(type="string").hidden is False
    assert FieldSpec(type="string", hidden=True).hidden is True


def test_a_default_must_fit_its_field() -> None:
    with pytest.raises(ValueError):
        FieldSpec(type="integer", default="x")
    with pytest.raises(ValueError):
        FieldSpec(type="boolean", max_length=3)
