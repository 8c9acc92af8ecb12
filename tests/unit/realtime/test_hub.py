"""The subscription index narrows, never hides: a change reaches exactly the subscribers a
check of every subscription would pick, and the index looks at far fewer of them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.auth.principal import Principal
from roost.realtime.changes import Changed, EventOp, Reader
from roost.realtime.hub import Hub, Subscription, key_of
from roost.records.collections import Collection, CollectionDef, FieldSpec, Rules
from roost.records.rules import parsed
from roost.storage.base import Change

ALICE = Principal(id="alice", role="user")
BOB = Principal(id="bob", role="user")
ADMIN = Principal(id="root", role="admin")
OWNER_ONLY = "owner = @auth.id"


def collection(
    list_rule: str | None = OWNER_ONLY, view_rule: str | None = OWNER_ONLY, **fields: Any
) -> Collection:
    definition = CollectionDef(
        name="msgs",
        rules=Rules(list=list_rule, view=view_rule),
        fields={name: FieldSpec(**spec) for name, spec in fields.items()},
    )
    return Collection(definition=definition, created="", updated="", version=1)


def record(owner: str | None, **data: Any) -> dict[str, Any]:
    system = {"id": "r1", "owner": owner, "created": "t", "updated": "t", "version": 1}
    return {**system, **data}


def change(
    position: int, after: dict[str, Any] | None, before: dict[str, Any] | None = None
) -> Changed:
    op = "create" if before is None else "delete" if after is None else "update"
    return Changed(
        Change(
            position=position,
            collection="msgs",
            record_id="r1",
            op=op,
            version=position,
            owner=None,
            at="t",
            record=orjson.dumps(after).decode() if after is not None else None,
            before=orjson.dumps(before).decode() if before is not None else None,
        )
    )


class Inbox:
    def __init__(self) -> None:
        self.got: list[tuple[str, EventOp, int]] = []

    def event(self, sub: Subscription, op: EventOp, changed: Changed, coll: Collection) -> None:
        self.got.append((sub.id, op, changed.change.position))


def live(sub_id: str, reader: Reader, inbox: Inbox) -> Subscription:
    return Subscription(sub_id, "msgs", reader, inbox, position=0, replaying=False)


@pytest.mark.parametrize(
    ("before", "after", "op"),
    [
        (None, record("alice"), "create"),
        (None, record("bob"), None),
        (record("alice"), record("alice", x=1), "update"),
        (record("bob"), record("alice"), "enter"),
        (record("alice"), record("bob"), "leave"),
        (record("bob"), record("bob", x=1), None),
        (record("alice"), None, "delete"),
        (record("bob"), None, None),
    ],
)
def test_what_a_change_is_to_a_reader(
    before: dict[str, Any] | None, after: dict[str, Any] | None, op: EventOp | None
) -> None:
    assert Reader(ALICE).op_of(collection(), change(1, after, before)) == op


def test_the_filter_and_both_rules_must_admit_a_state() -> None:
    open_list = collection(list_rule="", view_rule=OWNER_ONLY)
    assert Reader(ALICE).op_of(open_list, change(1, record("bob"))) is None
    flagged = Reader(ALICE, parsed("pinned = true"))
    assert flagged.op_of(collection(), change(1, record("alice"))) is None
    pinned = change(2, record("alice", pinned=True), record("alice"))
    assert flagged.op_of(collection(), pinned) == "enter"
    assert Reader(ADMIN).op_of(collection(list_rule=None, view_rule=None), pinned) == "update"
    assert Reader(ALICE).op_of(collection(list_rule=None), pinned) is None


def test_hidden_fields_are_stripped_from_other_readers() -> None:
    secret = collection("", "", note={"type": "string", "hidden": True})
    changed = change(1, record("alice", note="mine", title="t"))
    assert "note" in orjson.loads(orjson.dumps(changed.record_for(secret, ALICE)))
    assert "note" not in orjson.loads(orjson.dumps(changed.record_for(secret, BOB)))


def test_keys_come_from_filters_then_rules() -> None:
    coll = collection()
    room = key_of(Reader(ALICE, parsed('room = "r1" && n > 2')), coll)
    assert room is not None and (str(room[0]), room[1]) == ("room", "r1")
    owner = key_of(Reader(ALICE, parsed("n > 2")), coll)
    assert owner is not None and (str(owner[0]), owner[1]) == ("owner", "alice")
    assert key_of(Reader(ADMIN), coll) is None  # admins pass rules: nothing narrows them
    assert key_of(Reader(ALICE, parsed('room = "a" || room = "b"')), collection("", "")) is None


def test_one_write_to_one_room_looks_only_at_that_rooms_subscribers() -> None:
    hub, inbox, coll = Hub(), Inbox(), collection("", "")
    subs = []
    for i in range(10_000):
        sub = live(f"s{i}", Reader(ALICE, parsed(f'room = "r{i % 1000}"')), inbox)
        hub.add(sub, coll)
        subs.append(sub)
    changed = change(1, record("alice", room="r7"))
    filed = hub._filed["msgs"]
    assert len(filed.candidates(changed)) == 10
    hub.dispatch(changed, coll)
    assert sorted(got[0] for got in inbox.got) == sorted(f"s{i}" for i in range(7, 10_000, 1000))
    for sub in subs:
        hub.remove(sub)
    assert hub.count == 0 and not hub.watches("msgs")


def test_a_rule_change_files_subscriptions_again() -> None:
    hub, inbox = Hub(), Inbox()
    hub.add(live("s", Reader(ALICE), inbox), collection())  # keyed by owner = alice
    hub.dispatch(change(1, record("bob")), collection(list_rule="", view_rule=""))
    assert inbox.got == [("s", "create", 1)]


values = st.sampled_from(["a", "b", "c", 1, 2, True, None])
states = st.one_of(
    st.none(),
    st.builds(
        lambda owner, room, n: record(owner, room=room, n=n),
        st.sampled_from(["alice", "bob", None]),
        values,
        values,
    ),
)
filters = st.sampled_from(
    [None, 'room = "a"', "room = 1", "n = true", 'room = "b" && n = 2', "room = null", "n > 1"]
)
rules = st.sampled_from(["", OWNER_ONLY, "owner = @auth.id && room = 2", None])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subs=st.lists(st.tuples(st.sampled_from([ALICE, BOB, ADMIN]), filters), max_size=12),
    rule=rules,
    transitions=st.lists(st.tuples(states, states), min_size=1, max_size=6),
)
def test_the_index_delivers_what_checking_every_subscription_would(
    subs: list[tuple[Principal, str | None]],
    rule: str | None,
    transitions: list[tuple[dict[str, Any] | None, dict[str, Any] | None]],
) -> None:
    coll = collection(rule, rule)
    hub, inbox = Hub(), Inbox()
    readers = []
    for i, (principal, text) in enumerate(subs):
        reader = Reader(principal, parsed(text) if text else None)
        readers.append((f"s{i}", reader))
        hub.add(live(f"s{i}", reader, inbox), coll)
    expected = []
    for position, (before, after) in enumerate(transitions, start=1):
        if before is None and after is None:
            continue
        changed = change(position, after, before)
        hub.dispatch(changed, coll)
        for sub_id, reader in readers:
            op = reader.op_of(coll, changed)
            if op is not None:
                expected.append((sub_id, op, position))
    assert sorted(inbox.got, key=str) == sorted(expected, key=str)
