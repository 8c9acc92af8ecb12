"""Cache-aside reads without stampedes: ``Loader.get(key, load, ttl)``.

**Within an instance**, concurrent ``get`` calls of one key share one fetch (single
flight): one cache read and, on a miss, one ``load()``. The fetch runs as its own task, so
a caller that is cancelled stops waiting without cancelling the others; an exception from
``load()`` reaches every caller of that fetch, and the next ``get`` tries again.

**Across instances**, hot keys are refreshed before they expire, and not all at once, by
probabilistic early expiry (XFetch: Vattani, Chierichetti and Lowenstein, "Optimal
Probabilistic Cache Stampede Prevention", VLDB 2015). Each entry stores how long its load
took (``delta``) and when it expires; a read recomputes early when

    now - delta * beta * log(random()) >= expiry

so the closer the expiry and the slower the load, the likelier; ``beta`` > 1 favours
earlier refreshes. The entry in the cache is an envelope (``ENVELOPE``): one version
byte, the expiry (Unix time, seconds) and ``delta`` (seconds) as big-endian float64,
then the value. Anything else found under the key counts as a miss and is replaced.
Instances compare expiries with their own wall clocks: keep them in sync.

**When the cache is down** (``CacheUnavailable``), values come from ``load()``, still one
per key at a time, and are not stored: a read never fails because of the cache. Nothing
is logged per request (the cache logs its outage once); the counters below count.
"""

from __future__ import annotations

import asyncio
import math
import random as random_module
import struct
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from roost.cache.base import Cache, CacheUnavailable

ENVELOPE = struct.Struct("!Bdd")
"""Version, expiry (Unix time), delta (seconds the load took); the value follows."""
VERSION = 1

Load = Callable[[], Awaitable[bytes]]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Concurrent ``run(key, fetch)`` calls of one key share one ``fetch()``: it runs as its
    own task, so a caller that is cancelled stops waiting without cancelling the others; its
    exception reaches every caller, and the next call of the key fetches again.
    ``coalesced`` counts the calls that joined a fetch already in flight."""

    def __init__(self) -> None:
        self._in_flight: dict[K, asyncio.Task[V]] = {}
        self.coalesced = 0

    async def run(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        flight = self._in_flight.get(key)
        if flight is None:
            flight = asyncio.ensure_future(fetch())
            self._in_flight[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        else:
            self.coalesced += 1
        return await asyncio.shield(flight)

    def __len__(self) -> int:
        """Keys being fetched now."""
        return len(self._in_flight)

    def _landed(self, key: K, flight: asyncio.Task[V]) -> None:
        if self._in_flight.get(key) is flight:
            del self._in_flight[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: when every caller was cancelled, nobody else does


class Loader:
    """Reads through ``cache``, loading and storing what is missing or due for refresh.

    The counters are plain integers for metrics: ``hits`` (served from the cache),
    ``misses`` (absent: loaded and stored), ``early_refreshes`` (present but recomputed
    early), ``coalesced`` (calls that joined a fetch already in flight) and ``errors``
    (cache reads or writes that raised ``CacheUnavailable``).
    """

    def __init__(
        self,
        cache: Cache,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        self.cache = cache
        self._clock = clock
        """Measures how long loads take."""
        self._wall = wall
        """Dates expiries, which other instances compare with their own wall clocks."""
        self._random = random
        self._flights: SingleFlight[str, bytes] = SingleFlight()
        self.hits = 0
        self.misses = 0
        self.early_refreshes = 0
        self.errors = 0

    async def get(self, key: str, load: Load, ttl: float, *, beta: float = 1.0) -> bytes:
        """The value at ``key``: from the cache, or from ``load()`` (then stored for
        ``ttl`` seconds). Raises what ``load()`` raises, never ``CacheUnavailable``.
        A call that joins a fetch in flight gets that fetch's result (its caller's
        ``load``, ``ttl`` and ``beta``)."""
        if not ttl > 0:
            raise ValueError(f"a cache entry's ttl must be positive, not {ttl!r}")
        return await self._flights.run(key, lambda: self._fetch(key, load, ttl, beta))

    @property
    def coalesced(self) -> int:
        return self._flights.coalesced

    @property
    def in_flight(self) -> int:
        """Keys being fetched now."""
        return len(self._flights)

    async def _fetch(self, key: str, load: Load, ttl: float, beta: float) -> bytes:
        try:
            stored = await self.cache.get(key)
        except CacheUnavailable:
            self.errors += 1
            return await load()
        opened = _open(stored) if stored is not None else None
        if opened is None:
            self.misses += 1
        else:
            value, expiry, delta = opened
            if not self._due(expiry, delta, beta):
                self.hits += 1
                return value
            self.early_refreshes += 1
        started = self._clock()
        value = await load()
        delta = max(0.0, self._clock() - started)
        envelope = ENVELOPE.pack(VERSION, self._wall() + ttl, delta) + value
        try:
            await self.cache.set(key, envelope, ttl)
        except CacheUnavailable:
            self.errors += 1
        return value

    def _due(self, expiry: float, delta: float, beta: float) -> bool:
        """XFetch: whether to recompute now, with a chance growing towards ``expiry``."""
        draw = self._random()
        if draw <= 0.0:
            return True  # log(0) is -infinity: always early
        return self._wall() - delta * beta * math.log(draw) >= expiry


def _open(stored: bytes) -> tuple[bytes, float, float] | None:
    """The value, expiry and delta of an envelope; None when ``stored`` is not one."""
    if len(stored) < ENVELOPE.size:
        return None
    version, expiry, delta = ENVELOPE.unpack_from(stored)
    if version != VERSION or not (math.isfinite(expiry) and math.isfinite(delta)):
        return None
    return stored[ENVELOPE.size :], expiry, delta
