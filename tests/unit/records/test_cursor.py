from __future__ import annotations

import base64

import pytest

from roost.errors import InvalidCursor
from roost.records.cursor import PageCursors


def test_a_cursor_round_trips_for_its_own_scope() -> None:
    cursors = PageCursors(b"secret")
    token = cursors.encode("posts\n-created", [None, 3.5, "é", 7])
    assert cursors.decode("posts\n-created", token) == [None, 3.5, "é", 7]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-3],
        lambda token: token[:10],
        lambda token: "A" + token[1:] if token[0] != "A" else "B" + token[1:],
        lambda token: "not base64 !!",
        lambda token: "",
        lambda token: "x" * 5000,
    ],
)
def test_altered_cursors_are_refused(mangle: object) -> None:
    cursors = PageCursors(b"secret")
    token = cursors.encode("posts\nid", ["a"])
    with pytest.raises(InvalidCursor):
        cursors.decode("posts\nid", mangle(token))  # type: ignore[operator]


def test_a_cursor_is_bound_to_its_scope_and_key() -> None:
    token = PageCursors(b"secret").encode("posts\nid", ["a"])
    with pytest.raises(InvalidCursor):
        PageCursors(b"secret").decode("posts\n-id", token)
    with pytest.raises(InvalidCursor):
        PageCursors(b"other").decode("posts\nid", token)


def test_a_forged_payload_without_the_key_is_refused() -> None:
    forged = base64.urlsafe_b64encode(b"\0" * 16 + b'["posts\\nid",["a"]]').decode()
    with pytest.raises(InvalidCursor):
        PageCursors(b"secret").decode("posts\nid", forged.rstrip("="))
