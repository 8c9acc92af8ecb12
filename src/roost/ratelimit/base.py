"""The rate-limit port: one small interface, one module per backend.

A limit is a string such as ``"10/minute"`` or ``"3 per second"`` (the notation of the
`limits` library); a key is one or more strings, the first naming the purpose
(``hit("10/minute", "login-account", email)``). Both backends count with a *moving
window*: a hit is allowed when fewer than N hits were allowed in the last window, so a
burst can never reach 2N across a window edge, and the wait until a slot frees is exact.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter

from roost.backends import load_backend

BACKENDS = {
    "memory": "roost.ratelimit.memory:MemoryRateLimiter",
    "redis": "roost.ratelimit.redis:RedisRateLimiter",
    "rediss": "roost.ratelimit.redis:RedisRateLimiter",
}

MIN_RETRY_AFTER = 0.001
"""Seconds: a refused hit never reports a wait of zero, even when the window frees now."""


class RateLimiter(ABC):
    """Counts hits per (limit, key) and refuses the ones over the limit."""

    @abstractmethod
    async def hit(self, limit: str, *key: str) -> float | None:
        """Count one hit; None when allowed, else the seconds until a hit would be allowed.

        A refused hit is not counted. ``limit`` is parsed once (``ValueError`` when it is
        invalid). A backend that cannot reach its store allows the hit (fails open).
        """

    @abstractmethod
    async def clear(self, limit: str, *key: str) -> None:
        """Forget the hits of one (limit, key), e.g. when an admin unlocks an account."""

    @abstractmethod
    async def reset(self) -> None:
        """Forget every hit this limiter holds (tests and admin; may be slow on Redis)."""

    @abstractmethod
    async def ping(self) -> bool:
        """Whether the backing store answers now (within the backend's timeout)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and background tasks; the limiter is unusable afterwards."""


@lru_cache(maxsize=256)
def parse_limit(limit: str) -> RateLimitItem:
    """The parsed limit (cached); ``ValueError`` unless it is one positive ``N/period``."""
    try:
        items = parse_many(limit)
    except ValueError as error:
        raise ValueError(f"invalid rate limit {limit!r}: {error}") from None
    if len(items) != 1 or items[0].amount < 1 or items[0].multiples < 1:
        raise ValueError(f"invalid rate limit {limit!r}: expected one limit such as '10/minute'")
    return items[0]


def storage_key(key: tuple[str, ...]) -> tuple[str, ...]:
    """Key parts escaped so that ``("a/b",)`` and ``("a", "b")`` never share a counter."""
    return tuple(part.replace("%", "%25").replace("/", "%2F") for part in key)


async def hit_moving_window(
    strategy: MovingWindowRateLimiter, item: RateLimitItem, key: tuple[str, ...]
) -> float | None:
    """One hit through a `limits` moving-window strategy, with the wait when refused."""
    parts = storage_key(key)
    if await strategy.hit(item, *parts):
        return None
    stats = await strategy.get_window_stats(item, *parts)
    expiry = float(item.get_expiry())
    return min(max(stats.reset_time - time.time(), MIN_RETRY_AFTER), expiry)


def open_ratelimiter(url: str) -> RateLimiter:
    """The backend named by ``url``'s scheme (``memory://``, ``redis://host:port/db``).

    The backend module is imported only now, so a missing extra fails here with
    ``MissingDependency`` naming what to install.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    target = BACKENDS.get(scheme)
    if target is None:
        raise ValueError(f"unsupported rate limit URL scheme {scheme!r} in {url!r}")
    cls: type[RateLimiter] = load_backend(target)
    return cls(url)  # type: ignore[call-arg]
