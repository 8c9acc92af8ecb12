"""The embedded default: counters in this process (each worker process counts on its own)."""

from __future__ import annotations

import asyncio

from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from roost.ratelimit.base import RateLimiter, hit_moving_window, parse_limit, storage_key


class MemoryRateLimiter(RateLimiter):
    """Moving-window counters in a dict; ``memory://``. Never fails, never blocks."""

    def __init__(self, url: str = "memory://") -> None:
        self._storage = MemoryStorage()
        self._strategy = MovingWindowRateLimiter(self._storage)

    async def hit(self, limit: str, *key: str) -> float | None:
        return await hit_moving_window(self._strategy, parse_limit(limit), key)

    async def clear(self, limit: str, *key: str) -> None:
        await self._strategy.clear(parse_limit(limit), *storage_key(key))

    async def reset(self) -> None:
        await self._storage.reset()

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        # `limits` sweeps expired entries in a background task; stop it with its loop.
        timer = self._storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
            await asyncio.wait([timer])
        await self._storage.reset()
