"""The subscriptions of one instance, indexed so a change is checked only against the
subscriptions that can match it.

Each subscription is filed under its collection, and, when its filter or rules require a
field to equal one value (a top-level ``&&`` term such as ``room = "x"`` or
``owner = @auth.id``, with ``@auth`` resolved for its subscriber), under that field and
value. A change then reaches the collection's unfiled subscriptions and those filed
under the values its record had before or has after the write: the work per change grows
with the subscribers that may care, not with every subscription on the instance. The
index only narrows: every candidate is still checked in full (``Reader.op_of``).

Keys taken from rules depend on the rules, which an admin may change: a collection's
subscriptions are filed again when its rules differ from those they were filed under.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from roost.query.ast import And, Compare, ContextRef, Expr, Literal, Path
from roost.query.evaluate import resolve_context, walk
from roost.realtime.changes import Changed, EventOp, Reader
from roost.records.collections import Collection
from roost.records.rules import parsed
from roost.records.service import ExpressionContext
from roost.types import JSON

Key = tuple[Path, Hashable]


class Listener(Protocol):
    """Where a subscription's events go (a realtime session)."""

    def event(
        self, sub: Subscription, op: EventOp, changed: Changed, collection: Collection
    ) -> None: ...


@dataclass(eq=False, slots=True)
class Subscription:
    id: str
    collection: str
    reader: Reader
    listener: Listener
    position: int
    """The last change position this subscription has been given (or skipped)."""
    replaying: bool = True
    """Catching up from the change log: live changes skip it until it has caught up."""
    key: Key | None = None

    def offer(self, changed: Changed, collection: Collection) -> None:
        """Deliver ``changed`` if it is new to this subscription and its reader sees it."""
        position = changed.change.position
        if self.replaying or position <= self.position:
            return
        self.position = position
        op = self.reader.op_of(collection, changed)
        if op is not None:
            self.listener.event(self, op, changed, collection)


@dataclass(slots=True)
class Filed:
    """One collection's subscriptions."""

    rules: tuple[str | None, str | None] = (None, None)
    """The (list, view) rules the keys were taken from."""
    unkeyed: set[Subscription] = field(default_factory=set)
    keyed: dict[Path, dict[Hashable, set[Subscription]]] = field(default_factory=dict)
    size: int = 0
    stale: bool = False
    """Readers changed (a refreshed token): file again at the next change."""

    def add(self, sub: Subscription) -> None:
        self.size += 1
        if sub.key is None:
            self.unkeyed.add(sub)
        else:
            path, value = sub.key
            self.keyed.setdefault(path, {}).setdefault(value, set()).add(sub)

    def remove(self, sub: Subscription) -> bool:
        """Take ``sub`` out; False when it was not filed here."""
        if sub.key is None:
            subs = self.unkeyed
        else:
            subs = self.keyed.get(sub.key[0], {}).get(sub.key[1], set())
        if sub not in subs:
            return False
        subs.discard(sub)
        self.size -= 1
        if sub.key is not None and not subs:
            path, value = sub.key
            del self.keyed[path][value]
            if not self.keyed[path]:
                del self.keyed[path]
        return True

    def all(self) -> Iterator[Subscription]:
        yield from self.unkeyed
        for by_value in self.keyed.values():
            for subs in by_value.values():
                yield from subs

    def candidates(self, changed: Changed) -> set[Subscription]:
        found = set(self.unkeyed)
        for path, by_value in self.keyed.items():
            for state in (changed.after, changed.before):
                if state is not None:
                    value = walk(state, path.segments)
                    if isinstance(value, Hashable):
                        found |= by_value.get(value, set())
        return found


class Hub:
    """Every subscription of this instance, filed by collection and key."""

    def __init__(self) -> None:
        self._filed: dict[str, Filed] = {}

    @property
    def count(self) -> int:
        """Subscriptions filed on this instance."""
        return sum(filed.size for filed in self._filed.values())

    def watches(self, collection: str) -> bool:
        return collection in self._filed

    def add(self, sub: Subscription, collection: Collection) -> None:
        filed = self._filed.setdefault(sub.collection, Filed(_rules_of(collection)))
        sub.key = key_of(sub.reader, collection)
        filed.add(sub)

    def remove(self, sub: Subscription) -> None:
        filed = self._filed.get(sub.collection)
        if filed is None:
            return
        filed.remove(sub)
        if filed.size == 0:
            del self._filed[sub.collection]

    def refile(self, collection: str) -> None:
        """File ``collection``'s subscriptions again before its next change."""
        filed = self._filed.get(collection)
        if filed is not None:
            filed.stale = True

    def dispatch(self, changed: Changed, collection: Collection) -> None:
        """Offer one committed change to the subscriptions that may see it."""
        filed = self._filed.get(changed.change.collection)
        if filed is None:
            return
        if filed.stale or filed.rules != _rules_of(collection):
            filed = self._refile(filed, collection)
        for sub in filed.candidates(changed):
            sub.offer(changed, collection)

    def _refile(self, filed: Filed, collection: Collection) -> Filed:
        subs = list(filed.all())
        fresh = self._filed[collection.definition.name] = Filed(_rules_of(collection))
        for sub in subs:
            sub.key = key_of(sub.reader, collection)
            fresh.add(sub)
        return fresh


def _rules_of(collection: Collection) -> tuple[str | None, str | None]:
    rules = collection.definition.rules
    return rules.list, rules.view


def key_of(reader: Reader, collection: Collection) -> Key | None:
    """A (field, value) every record this reader sees has, if its filter or rules name one."""
    context = ExpressionContext(reader.principal)
    expressions = [reader.filter] if reader.filter is not None else []
    if not reader.principal.is_admin:
        rules = collection.definition.rules
        expressions += [parsed(rule) for rule in (rules.list, rules.view) if rule]
    for expression in expressions:
        for term in _conjuncts(expression):
            key = _equality(term, context)
            if key is not None:
                return key
    return None


def _conjuncts(expr: Expr) -> Iterator[Expr]:
    if isinstance(expr, And):
        for term in expr.terms:
            yield from _conjuncts(term)
    else:
        yield expr


def _equality(term: Expr, context: ExpressionContext) -> Key | None:
    """``path = constant`` (either way round) as a key; None for any other term."""
    if not isinstance(term, Compare) or term.op != "=":
        return None
    for path, other in ((term.left, term.right), (term.right, term.left)):
        if not isinstance(path, Path):
            continue
        value: JSON
        if isinstance(other, Literal):
            value = other.value
        elif isinstance(other, ContextRef) and other.name.startswith("auth."):
            value = resolve_context(other, context)
        else:
            continue
        if isinstance(value, Hashable):
            return path, value
    return None
