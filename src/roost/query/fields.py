"""``fields=`` projections: which parts of a record a response keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from roost.query.ast import JSON, Path
from roost.query.errors import ExpressionError
from roost.query.lexer import read_path_list
from roost.query.limits import MAX_FILTER_LENGTH, MAX_PROJECTION_FIELDS


def parse_fields(text: str) -> tuple[Path, ...]:
    """Parse ``"id,title,author.name"`` into distinct paths (array indexes not allowed)."""
    if len(text) > MAX_FILTER_LENGTH:
        raise ExpressionError(
            f"fields is longer than {MAX_FILTER_LENGTH} characters", MAX_FILTER_LENGTH
        )
    paths: list[Path] = []
    for item in read_path_list(text, "fields"):
        if any(isinstance(segment, int) for segment in item.segments):
            raise ExpressionError("fields cannot select array elements", item.position)
        path = Path(item.segments)
        if path in paths:
            continue
        if len(paths) >= MAX_PROJECTION_FIELDS:
            raise ExpressionError(
                f"fields has more than {MAX_PROJECTION_FIELDS} paths", item.position
            )
        paths.append(path)
    return tuple(paths)


def project(record: Mapping[str, JSON], paths: Sequence[Path]) -> dict[str, JSON]:
    """A new record with only ``paths`` (and ``id``), nested paths keeping their nesting.

    Missing paths are left out; ``a`` wins over ``a.b``. Selected values are shared
    with ``record``, not copied.
    """
    wanted = {tuple(str(segment) for segment in path.segments) for path in paths}
    wanted.add(("id",))
    kept = [p for p in wanted if not any(p[:n] in wanted for n in range(1, len(p)))]
    result: dict[str, JSON] = {}
    for segments in sorted(kept):
        value: JSON = dict(record)
        for segment in segments:
            if not isinstance(value, dict) or segment not in value:
                break
            value = value[segment]
        else:
            target = result
            for segment in segments[:-1]:
                child = target.setdefault(segment, {})
                assert isinstance(child, dict)
                target = child
            target[segments[-1]] = value
    return result
