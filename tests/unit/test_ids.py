from __future__ import annotations

import uuid

from roost.ids import is_uuid7, new_id


def test_new_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(5000)]
    assert all(is_uuid7(value) for value in ids)
    assert all(uuid.UUID(value).version == 7 for value in ids[:10])
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_is_uuid7_refuses_other_shapes() -> None:
    assert is_uuid7(new_id().upper())
    for bad in ["", "x", str(uuid.uuid4()), new_id() + "0", new_id()[:-1] + "g", "1" * 36]:
        assert not is_uuid7(bad), bad
