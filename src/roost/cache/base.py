"""The cache port: one small interface, one module per backend.

Values are bytes, serialised once by the caller and served as they are. Every operation
of a backend that cannot reach its store within its timeout raises ``CacheUnavailable``:
the caller decides what that means (a read falls back to the database; a write that must
invalidate an entry does not pretend it did). Keys are plain strings; a key's
``{hash tag}`` (Redis Cluster's notation) keeps related keys in one slot.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from roost.backends import load_backend

BACKENDS = {
    "memory": "roost.cache.memory:MemoryCache",
    "redis": "roost.cache.redis:RedisCache",
    "rediss": "roost.cache.redis:RedisCache",
    "redis+cluster": "roost.cache.redis:RedisClusterCache",
    "rediss+cluster": "roost.cache.redis:RedisClusterCache",
}


class CacheUnavailable(Exception):
    """The cache's store did not answer in time (or refused): nothing was read or written
    for sure."""


class Cache(ABC):
    """Bytes by key, each with a time to live."""

    backend = "memory"
    """Names the store in logs and metrics."""
    shared = False
    """Whether every process of the deployment sees the same entries (a Redis), rather
    than each its own (in-process)."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """``get`` of each key, in order, in one round trip where the backend can."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (> 0), replacing any value."""

    @abstractmethod
    async def delete(self, *keys: str) -> None:
        """Remove the keys; absent ones are fine. Raises when it could not be done."""

    @abstractmethod
    async def claim(self, key: str, value: bytes, ttl: float) -> bytes:
        """The value at ``key``; when there is none, ``value`` is stored (for ``ttl``
        seconds) and returned. Atomic: of concurrent claims of an absent key, one stores its
        value and every one returns that value."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """Whether the last operation reached the store; readiness and metrics show it."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections."""


def open_cache(url: str) -> Cache:
    """The cache named by ``url``'s scheme (imported lazily); ValueError when unknown."""
    scheme = url.split(":", 1)[0]
    target = BACKENDS.get(scheme)
    if target is None:
        raise ValueError(f"unsupported cache URL scheme {scheme!r}")
    cls: type[Cache] = load_backend(target)
    return cls(url)  # type: ignore[call-arg]
