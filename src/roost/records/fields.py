"""Record field names, the optional field schema, and validation of record data.

Data is a JSON object of client fields. Top-level names match ``FIELD_NAME`` and are never a
system field. Every integer, at any depth, lies within ±(2**53 - 1) so that JavaScript
clients, SQLite and PostgreSQL all hold it exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from roost.errors import ValidationFailed
from roost.types import JSON, JSONObject

SYSTEM_FIELDS = ("id", "owner", "created", "updated", "version")
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_SAFE_INTEGER = 2**53 - 1
_LONG_NUMBER = re.compile(r"\d{16}")

FieldType = Literal["string", "number", "integer", "boolean", "object", "array", "datetime"]


def load_data(text: str | bytes) -> JSONObject:
    """Stored record data as JSON. PostgreSQL's ``jsonb`` keeps numbers as decimals, so a
    whole float beyond ±(2**53 - 1), stored from ``1e+16``, comes back as ``10000000000000000``:
    records hold no such integer, so one read back is that float again."""
    data: JSONObject = orjson.loads(text)
    if _LONG_NUMBER.search(text if isinstance(text, str) else text.decode()):
        return {key: _floats_beyond_safe(value) for key, value in data.items()}
    return data


def _floats_beyond_safe(value: JSON) -> JSON:
    if isinstance(value, dict):
        return {key: _floats_beyond_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_floats_beyond_safe(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        return float(value)
    return value


class FieldSpec(BaseModel):
    """One field of a collection schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    required: bool = False
    default: JSON = None
    max_length: Annotated[int, Field(ge=0)] | None = None
    min: int | float | None = None
    max: int | float | None = None
    values: Annotated[list[str | int | float | bool], Field(min_length=1)] | None = None
    """The only values the field may take."""
    hidden: bool = False
    """Shown only to admins and the record's owner; nobody else may filter or sort on it."""

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.max_length is not None and self.type != "string":
            raise ValueError("max_length applies to string fields only")
        if (self.min is not None or self.max is not None) and self.type not in (
            "number",
            "integer",
        ):
            raise ValueError("min and max apply to number and integer fields only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        if self.values is not None and any(
            check_value("values", self.model_copy(update={"values": None}), v)[1]
            for v in self.values
        ):
            raise ValueError("values must all match the field's own type and limits")
        if self.default is not None:
            errors: list[dict[str, str]] = []
            check_values(self.default, "default", errors)
            if errors or check_value("default", self, self.default)[1]:
                raise ValueError("default does not match the field's own type and limits")
        return self


def now_iso() -> str:
    """The current UTC time as Roost writes timestamps: ``2026-11-28T18:04:02.123Z``."""
    return format_datetime(datetime.now(UTC))


def format_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_datetime(value: str) -> str | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return format_datetime(moment)


def _is_number(value: JSON) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_value(name: str, spec: FieldSpec, value: JSON) -> tuple[JSON, str | None]:
    """``value`` as stored (datetimes normalised to UTC) and an error message, or None."""
    kind = spec.type
    if kind == "string":
        if not isinstance(value, str):
            return value, f"{name} must be a string"
        if spec.max_length is not None and len(value) > spec.max_length:
            return value, f"{name} must be at most {spec.max_length} characters"
    elif kind in ("number", "integer"):
        if not _is_number(value) or (kind == "integer" and not _is_integral(value)):
            return value, f"{name} must be {'an integer' if kind == 'integer' else 'a number'}"
        if kind == "integer":
            value = int(value)
        if spec.min is not None and value < spec.min:
            return value, f"{name} must be at least {_plain(spec.min)}"
        if spec.max is not None and value > spec.max:
            return value, f"{name} must be at most {_plain(spec.max)}"
    elif kind == "boolean" and not isinstance(value, bool):
        return value, f"{name} must be true or false"
    elif kind == "object" and not isinstance(value, dict):
        return value, f"{name} must be an object"
    elif kind == "array" and not isinstance(value, list):
        return value, f"{name} must be an array"
    elif kind == "datetime":
        normalised = _parse_datetime(value) if isinstance(value, str) else None
        if normalised is None:
            return value, f"{name} must be an ISO 8601 date-time with a time zone"
        value = normalised
    if spec.values is not None and not any(
        allowed == value and isinstance(allowed, bool) == isinstance(value, bool)
        for allowed in spec.values
    ):
        return value, f"{name} must be one of {', '.join(map(str, spec.values))}"
    return value, None


def _is_integral(value: int | float) -> bool:
    return isinstance(value, int) or value.is_integer()


def _plain(number: int | float) -> str:
    return str(number)


def check_names(data: Mapping[str, JSON], *, allow: Set[str] = frozenset()) -> list[dict[str, str]]:
    """Errors for top-level names that are invalid or belong to the server (but ``allow``)."""
    errors = []
    for name in data:
        if name in SYSTEM_FIELDS:
            if name not in allow:
                errors.append({"field": name, "message": f"{name} is set by the server"})
        elif not FIELD_NAME.match(name):
            errors.append(
                {
                    "field": name[:80],
                    "message": "field names start with a letter and hold only letters,"
                    " digits and _ (64 at most)",
                }
            )
    return errors


def check_values(value: JSON, path: str, errors: list[dict[str, str]]) -> None:
    """Append an error for every value no backend can hold exactly, at any depth.

    Integers must lie within ±(2**53 - 1); strings and keys must not hold U+0000 (SQLite's
    JSON functions stop reading a string there).
    """
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            errors.append({"field": path, "message": "integers must lie within ±(2^53 - 1)"})
    elif isinstance(value, str):
        if "\x00" in value:
            errors.append({"field": path, "message": "strings must not contain U+0000"})
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if "\x00" in key:
                errors.append({"field": path, "message": "keys must not contain U+0000"})
            check_values(item, child, errors)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_values(item, f"{path}.{index}", errors)


def validate_data(
    data: JSONObject, schema: Mapping[str, FieldSpec], *, strict: bool, creating: bool
) -> JSONObject:
    """Check ``data`` (client fields only) against the schema; return it normalised.

    On create, missing fields take their defaults. Raises ``ValidationFailed`` naming every
    offending field at once.
    """
    errors: list[dict[str, str]] = []
    check_values(data, "", errors)
    result = dict(data)
    for name, spec in schema.items():
        if name not in result or result[name] is None:
            if creating and spec.default is not None and name not in result:
                result[name] = spec.default
            elif spec.required:
                errors.append({"field": name, "message": f"{name} is required"})
            continue
        result[name], message = check_value(name, spec, result[name])
        if message:
            errors.append({"field": name, "message": message})
    if strict:
        for name in result.keys() - schema.keys():
            errors.append({"field": name, "message": f"{name} is not a field of this collection"})
    if errors:
        raise ValidationFailed(_summary(errors), errors)
    return result


def _summary(errors: list[dict[str, str]]) -> str:
    first = errors[0]["message"]
    return first if len(errors) == 1 else f"{first} (and {len(errors) - 1} more)"


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7396 JSON merge patch: ``null`` removes a key, objects merge, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
