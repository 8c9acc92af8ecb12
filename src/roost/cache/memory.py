"""The embedded default: a bounded LRU of bytes in this process, ``memory://``.

The cache holds at most ``max_entries`` entries and ``max_bytes`` bytes of values (keys
are not counted), evicting the least recently used entry (read or written) first. Both
bounds come from the URL, with defaults::

    memory://?max_entries=10000&max_bytes=67108864

Expiry is checked when an entry is read (``time.monotonic``); an expired entry nobody
reads stays until it is evicted, and counts against the bounds until then. A value larger
than ``max_bytes`` is not kept at all (``claim`` returns it unkept). Every operation is
O(1) per key, never waits and never raises ``CacheUnavailable``; each worker process has
its own cache.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from roost.cache.base import Cache

DEFAULT_MAX_ENTRIES = 10_000
"""Entries kept when the URL names no ``max_entries``."""
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Bytes of values kept when the URL names no ``max_bytes``."""


class _Entry(NamedTuple):
    value: bytes
    expires: float
    """``time.monotonic()`` after which the entry is gone."""
    size: int


class MemoryCache(Cache):
    """An LRU bounded by entries and by bytes, with a time to live per entry."""

    def __init__(self, url: str = "memory://") -> None:
        self.max_entries, self.max_bytes = parse_bounds(url)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    @property
    def size(self) -> tuple[int, int]:
        """Entries and bytes held now (expired entries not yet evicted included)."""
        return len(self._entries), self._bytes

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        if entry is None:
            return None
        return entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        _check_ttl(ttl)
        self._put(key, bytes(value), ttl, len(value))

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._remove(key)

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes:
        _check_ttl(ttl)
        entry = self._live(key)
        if entry is not None:
            return entry.value
        self._put(key, bytes(value), ttl, len(value))
        return value

    @property
    def healthy(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _live(self, key: str) -> _Entry | None:
        """The entry, marked as just used; None (and forgotten) when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() >= entry.expires:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def _put(self, key: str, value: bytes, ttl: float, size: int) -> None:
        self._remove(key)
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        self._entries[key] = _Entry(value, time.monotonic() + ttl, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size


def parse_bounds(url: str) -> tuple[int, int]:
    """``max_entries`` and ``max_bytes`` from a ``memory://`` URL; ValueError when invalid."""
    parts = urlsplit(url)
    if parts.scheme != "memory" or parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"not a memory cache URL: {url!r}")
    bounds = {"max_entries": DEFAULT_MAX_ENTRIES, "max_bytes": DEFAULT_MAX_BYTES}
    for name, text in parse_qsl(parts.query, keep_blank_values=True):
        if name not in bounds:
            raise ValueError(f"unknown memory cache URL parameter {name!r}")
        if re.fullmatch(r"[0-9]+", text) is None or int(text) < 1:
            raise ValueError(f"the memory cache's {name} must be a positive integer: {text!r}")
        bounds[name] = int(text)
    return bounds["max_entries"], bounds["max_bytes"]


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"a cache entry's ttl must be positive, not {ttl!r}")
