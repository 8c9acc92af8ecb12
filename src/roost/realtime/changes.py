"""What a change means to one reader: the test realtime events and sync share.

A change carries the record as it was before and after the write. A reader sees a state
when the collection's ``list`` and ``view`` rules and the reader's own filter all accept
it, so each change becomes, for one reader:

    before seen   after seen   op
    no            yes          create (a create) or enter (an update)
    yes           yes          update
    yes           no           leave (an update) or delete (a delete)
    no            no           nothing: the reader learns nothing, not even the id

Rules are the collection's rules when the change is delivered, applied with the reader's
``@auth`` then; hidden fields are stripped as for any read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson

from roost.auth.principal import Principal
from roost.errors import InvalidCursor, ResyncRequired
from roost.query.ast import Expr
from roost.query.evaluate import evaluate
from roost.records.collections import Collection
from roost.records.rules import allows, sees_all_fields, strip_hidden
from roost.records.service import ExpressionContext
from roost.storage.base import Change, LogState
from roost.types import JSONObject

EventOp = Literal["create", "update", "delete", "enter", "leave"]
GONE: tuple[EventOp, ...] = ("delete", "leave")
"""Ops whose event carries no record (a tombstone)."""


def encode_cursor(epoch: str, position: int) -> str:
    """The opaque cursor of a change-log position in the database named by ``epoch``."""
    return f"{epoch}.{position}"


def decode_cursor(cursor: str, log: LogState) -> int:
    """The position a cursor names; InvalidCursor when it is not one, ResyncRequired when
    it belongs to another database (an import) or its changes were pruned."""
    epoch, _, number = cursor.partition(".")
    if len(cursor) > 64 or not (number.isascii() and number.isdigit()) or not epoch:
        raise InvalidCursor("the cursor is not one this server gave")
    if epoch != log.epoch:
        raise ResyncRequired("the cursor belongs to another database; sync again from scratch")
    position = int(number)
    if position < log.floor:
        raise ResyncRequired(
            "the changes after this cursor are older than the change log keeps;"
            " sync again from scratch"
        )
    if position > log.head:
        raise InvalidCursor("the cursor is ahead of the change log")
    return position


class Changed:
    """One change with its record states parsed once, however many readers it reaches."""

    __slots__ = ("change", "after", "before")

    def __init__(self, change: Change) -> None:
        self.change = change
        self.after: JSONObject | None = orjson.loads(change.record) if change.record else None
        self.before: JSONObject | None = orjson.loads(change.before) if change.before else None

    def record_for(
        self, collection: Collection, principal: Principal
    ) -> JSONObject | orjson.Fragment:
        """The record after the change as ``principal`` may see it; the stored JSON text
        itself (serialised once) when no field is hidden from them."""
        assert self.after is not None and self.change.record is not None
        if sees_all_fields(collection, principal):
            return orjson.Fragment(self.change.record)
        return strip_hidden(collection, principal, self.after)


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads a collection's changes, and through which filter (None: all)."""

    principal: Principal
    filter: Expr | None = None

    def sees(
        self,
        collection: Collection,
        record: JSONObject | None,
        context: ExpressionContext | None = None,
    ) -> bool:
        if record is None:
            return False
        context = context or ExpressionContext(self.principal)
        return (
            allows(collection, "list", self.principal, record, context)
            and allows(collection, "view", self.principal, record, context)
            and (self.filter is None or evaluate(self.filter, record, context))
        )

    def op_of(self, collection: Collection, changed: Changed) -> EventOp | None:
        """What ``changed`` is to this reader (see the module's table), or None."""
        context = ExpressionContext(self.principal)  # one ``@now`` for both states
        now = self.sees(collection, changed.after, context)
        then = self.sees(collection, changed.before, context)
        if now:
            if then:
                return "update"
            return "create" if changed.change.op == "create" else "enter"
        if then:
            return "delete" if changed.change.op == "delete" else "leave"
        return None
