"""The server's cache of records, list pages and collection definitions: fast, never wrong.

**Tokens.** What a write can change has a token in the cache, 8 random bytes::

    roost:{c.<name>}:d            the collection's definition (rules, fields, options)
    roost:{c.<name>}:w            the collection's records (any of them)
    roost:{r.<name>.<id>}:w       one record

After a write block commits and before it is acknowledged, the tokens of everything it
touched are replaced by new random ones (``invalidate``, through
``Storage.after_commit``). A reader takes the tokens *before* it reads the database and
stores what it read together with (or keyed by) them:

    roost:{r.<name>.<id>}:e       the record, stored with the tokens it was read under
    roost:{c.<name>}:q:<digest>   a list page; the digest covers both collection tokens

An entry is served only while its tokens are current. So a read that begins after a
write was acknowledged finds the write's new token, misses every entry made before the
write, and reads the database, where the write is committed: no reader gets a version
older than a write acknowledged before it began. A write in flight (committed, tokens
not yet replaced) is not acknowledged, so serving the older version meanwhile is right.
Tokens never repeat, so a token lost (evicted, expired, Redis restarted empty) cannot
revive an old entry: the next reader claims a new token (``Cache.claim``) and misses.
Nothing is ever scanned or deleted by pattern, and a record's keys share one hash tag
(one Redis Cluster slot, one MGET), as do a collection's.

**What is stored is shared, what is served is checked.** A record entry holds the
record with every field; each request checks the view rule and strips hidden fields for
its own caller. A list page is computed under the caller's rules, so its key includes
the caller (id, role, verified) unless the answer cannot depend on who asks (list rule
``""``, no hidden fields, a filter without ``@auth``). Rules or filters that read
``@now`` are never cached. Missing records are cached too (empty entries), so polling an
absent id does not reach the database each time.

**Stampedes.** Concurrent misses of one record under the same tokens share one database
read per instance (single flight; callers with other tokens never join a read begun
before their write), and the records loaded lately are kept by tokens, so a reader
whose lookup raced the fill does not load again. List pages, which cost more, are also
refreshed early by probabilistic expiry (``Loader``), so instances do not all miss at
once.

**Fills read the primary**: a replica behind the token it was read under would store an
old version under a current token.

**Outage.** When the cache does not answer, reads go to the database (no coalescing:
without tokens, a read in flight may predate a write). Token replacements always try
the store, even while reads are shed (``roost.cache.redis``). A write whose tokens
could not be replaced is committed all the same; its keys are kept (up to
``MAX_PENDING``) and replaced by ``replay`` as soon as the cache answers, and this
instance reads nothing from the cache meanwhile (for an entry TTL when more were
pending than kept). Another instance that reaches the cache while this one cannot (a
partition), or a Redis that comes back with entries it persisted before the write, may
serve the older version until the replay: run the cache's Redis without persistence.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
import structlog

from roost.cache.base import Cache, CacheUnavailable
from roost.cache.loader import Loader, SingleFlight
from roost.records.collections import Collection
from roost.records.rules import context_names, parsed
from roost.storage.base import Touched
from roost.types import JSONObject

if TYPE_CHECKING:  # the service imports this module
    from roost.records.service import PageRequest

TOKEN_BYTES = 8
ENTRY = struct.Struct(f"!B{TOKEN_BYTES}s{TOKEN_BYTES}s")
"""A record entry's head: kind (``FOUND``/``ABSENT``), definition and record tokens; the
record's JSON follows when found."""
FOUND, ABSENT = 1, 2
TOKEN_TTL_FACTOR = 4
"""Tokens live this many entry TTLs (a lost token only costs misses)."""
DEFINITIONS_KEPT = 256
"""Parsed definitions kept per process, by collection and token."""
LANDED_KEPT = 1024
"""Records kept per process after loading them (``RecordCache._landed``)."""
MAX_PENDING = 10_000
"""Keys whose tokens could not be replaced, kept to replace them when the cache is back."""
RETRY_PENDING_SECONDS = 0.25

log = structlog.get_logger("roost.cache")

LoadRecord = Callable[[], Awaitable[tuple[Collection, JSONObject | None]]]
"""Reads one record and its collection from the primary; None when the record is absent;
raises when the collection is."""


@dataclass(slots=True)
class Counters:
    """Plain counts for metrics."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    bypassed: int = 0
    """Reads sent to the database because tokens are pending replacement."""


@dataclass(frozen=True, slots=True)
class Tokens:
    definition: bytes
    records: bytes


class RecordCache:
    """Cache-aside reads of records and list pages over ``cache`` (see the module)."""

    def __init__(
        self,
        cache: Cache,
        ttl: float,
        *,
        observe: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.cache = cache
        self.ttl = ttl
        self.pages = Loader(cache)
        self.records = Counters()
        self._flights: SingleFlight[
            tuple[str, bytes, bytes], tuple[Collection, JSONObject | None]
        ] = SingleFlight()
        self._definitions: OrderedDict[tuple[str, bytes], Collection] = OrderedDict()
        self._landed: OrderedDict[
            tuple[str, bytes, bytes], tuple[Collection, JSONObject | None]
        ] = OrderedDict()
        """Records this process loaded lately, by key and tokens: a reader whose cache
        lookup raced a fill of the same tokens takes its result instead of loading again
        (as good as the entry the fill stores: the tokens are what make it current)."""
        self._pending: dict[str, int] = {}
        """Keys whose new token could not be stored, with the failure count when it failed."""
        self._failures = 0
        self._overflowed_at: float | None = None
        self._observe = observe

    @property
    def coalesced(self) -> int:
        return self._flights.coalesced

    # reads

    async def record(
        self, name: str, record_id: str, load: LoadRecord
    ) -> tuple[Collection, JSONObject | None]:
        """The record (all fields) and its collection, from the cache or ``load()``."""
        if not self.usable():
            self.records.bypassed += 1
            return await load()
        tag = f"roost:{{r.{name}.{record_id}}}"
        try:
            definition, written, entry = await self._get_many(
                [_definition_key(name), f"{tag}:w", f"{tag}:e"]
            )
            tokens = await self._tokens(name, definition, f"{tag}:w", written)
        except CacheUnavailable:
            self.records.errors += 1
            return await load()
        collection = self._definitions.get((name, tokens.definition))
        opened = None if entry is None or collection is None else _open(entry, tokens)
        if opened is not None:
            assert collection is not None
            self.records.hits += 1
            self._definitions.move_to_end((name, tokens.definition))
            return collection, opened[0]
        flight = (tag, tokens.definition, tokens.records)
        landed = self._landed.get(flight)
        if landed is not None:
            self.records.hits += 1
            return landed
        self.records.misses += 1

        async def fill() -> tuple[Collection, JSONObject | None]:
            collection, record = await load()
            self._remember(name, tokens.definition, collection)
            self._landed[flight] = (collection, record)
            while len(self._landed) > LANDED_KEPT:
                self._landed.popitem(last=False)
            try:
                await self.cache.set(f"{tag}:e", _entry(tokens, record), self.ttl)
            except CacheUnavailable:
                self.records.errors += 1
            return collection, record

        return await self._flights.run(flight, fill)

    async def collection(
        self, name: str, load: Callable[[], Awaitable[Collection]]
    ) -> tuple[Collection, Tokens | None]:
        """The collection's definition (parsed once per token; ``load()`` on a miss) and
        its tokens (None when the cache cannot be used now)."""
        tokens = await self.collection_tokens(name)
        if tokens is None:
            return await load(), None
        collection = self._definitions.get((name, tokens.definition))
        if collection is None:
            collection = await load()
            self._remember(name, tokens.definition, collection)
        return collection, tokens

    def page_key(self, collection: Collection, tokens: Tokens, wanted: PageRequest) -> str | None:
        """The key of a list page of ``collection`` (read under ``tokens``), or None when
        the page is not to be cached."""
        definition = collection.definition
        rule = definition.rules.list
        names = wanted.filter_names | (context_names(parsed(rule)) if rule else set())
        if not definition.options.cache_lists or "now" in names:
            return None
        shared = rule == "" and not definition.hidden_fields and not names
        principal = wanted.principal
        caller = None if shared else (principal.id, principal.role, principal.verified)
        digest = hashlib.blake2b(
            orjson.dumps([caller, *wanted.identity]), digest_size=16
        ).hexdigest()
        return (
            f"roost:{{c.{definition.name}}}:q:"
            f"{tokens.definition.hex()}{tokens.records.hex()}{digest}"
        )

    async def page(self, key: str, load: Callable[[], Awaitable[bytes]]) -> bytes:
        """A list page's JSON from the cache, or from ``load()`` (which reads the primary)."""
        started = time.perf_counter()
        try:
            return await self.pages.get(key, load, self.ttl)
        finally:
            self._observe(time.perf_counter() - started)

    async def collection_tokens(self, name: str) -> Tokens | None:
        """The collection's current tokens; None when the cache cannot be used."""
        if not self.usable():
            return None
        written_key = f"roost:{{c.{name}}}:w"
        try:
            definition, written = await self._get_many([_definition_key(name), written_key])
            return await self._tokens(name, definition, written_key, written)
        except CacheUnavailable:
            self.pages.errors += 1
            return None

    # writes

    async def invalidate(self, touched: Sequence[Touched]) -> None:
        """Replace the tokens of what a committed write block touched (never raises)."""
        keys: set[str] = set()
        for name, record_id in touched:
            if record_id is None:
                keys.add(_definition_key(name))
            else:
                keys.add(f"roost:{{c.{name}}}:w")
                keys.add(f"roost:{{r.{name}.{record_id}}}:w")
        await self._replace(keys)

    # inside

    async def replay(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: replace the pending tokens, every
        ``RETRY_PENDING_SECONDS`` while some are pending (at start, with the instance)."""
        while not stop.is_set():
            if self._pending:
                await self._replace(set())
            try:
                await asyncio.wait_for(stop.wait(), RETRY_PENDING_SECONDS)
            except TimeoutError:
                pass

    def usable(self) -> bool:
        """Whether to read from the cache now: not while tokens are pending replacement
        (``replay``), nor for an entry TTL after more were pending than could be kept."""
        if self._overflowed_at is not None:
            if time.monotonic() - self._overflowed_at < self.ttl:
                return False
            self._overflowed_at = None
        return not self._pending

    async def _replace(self, keys: set[str]) -> None:
        """Give ``keys`` and the pending ones new tokens, all at once; keep those that
        failed pending. A key that failed again after this attempt began stays pending
        whatever this attempt did."""
        ttl = self.ttl * TOKEN_TTL_FACTOR
        began = self._failures

        async def replace(key: str) -> None:
            try:
                await self.cache.set(key, os.urandom(TOKEN_BYTES), ttl)
            except CacheUnavailable:
                if not self._pending:
                    log.warning("cache_invalidation_pending")
                self._failures += 1
                self._pending[key] = self._failures
            else:
                if self._pending.get(key, began + 1) <= began:
                    del self._pending[key]

        await asyncio.gather(*(replace(key) for key in keys | self._pending.keys()))
        if len(self._pending) > MAX_PENDING:
            log.error("cache_invalidation_overflow", keys=len(self._pending))
            self._overflowed_at = time.monotonic()
            self._pending.clear()

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        started = time.perf_counter()
        try:
            return await self.cache.get_many(keys)
        finally:
            self._observe(time.perf_counter() - started)

    async def _tokens(
        self, name: str, definition: bytes | None, written_key: str, written: bytes | None
    ) -> Tokens:
        """The tokens read, with absent ones claimed (a fresh random one, or the one a
        concurrent reader claimed first)."""
        ttl = self.ttl * TOKEN_TTL_FACTOR
        if definition is None:
            definition = await self.cache.claim(_definition_key(name), os.urandom(TOKEN_BYTES), ttl)
        if written is None:
            written = await self.cache.claim(written_key, os.urandom(TOKEN_BYTES), ttl)
        return Tokens(definition, written)

    def _remember(self, name: str, token: bytes, collection: Collection) -> None:
        self._definitions[(name, token)] = collection
        self._definitions.move_to_end((name, token))
        while len(self._definitions) > DEFINITIONS_KEPT:
            self._definitions.popitem(last=False)


def _definition_key(name: str) -> str:
    return f"roost:{{c.{name}}}:d"


def _entry(tokens: Tokens, record: JSONObject | None) -> bytes:
    if record is None:
        return ENTRY.pack(ABSENT, tokens.definition, tokens.records)
    return ENTRY.pack(FOUND, tokens.definition, tokens.records) + orjson.dumps(record)


def _open(entry: bytes, tokens: Tokens) -> tuple[JSONObject | None] | None:
    """``(record,)`` from an entry made under ``tokens`` (``(None,)``: the record is
    absent); None when the entry was not made under these tokens."""
    if len(entry) < ENTRY.size:
        return None
    kind, definition, records = ENTRY.unpack_from(entry)
    if definition != tokens.definition or records != tokens.records:
        return None
    if kind == ABSENT:
        return (None,)
    if kind != FOUND:
        return None
    record: JSONObject = orjson.loads(entry[ENTRY.size :])
    return (record,)
