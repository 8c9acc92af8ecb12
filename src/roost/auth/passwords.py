"""Password hashing with argon2id, always off the event loop."""

from __future__ import annotations

import os

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256  # bounds hashing cost per request


def check_password_policy(password: str) -> str | None:
    """Why ``password`` is unacceptable, or None when it is fine."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password must be at most {MAX_PASSWORD_LENGTH} characters"
    return None


def hashing_slots() -> int:
    """How many hashes run at once: one per CPU, so that a burst of logins queues instead of
    starving the event loop of CPU (and of memory: each hash holds ``memory_kib``)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(usable) if usable else os.cpu_count() or 1)


class Passwords:
    """argon2id at the configured cost; hashes made at another cost are redone on login."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._dummy = self._hasher.hash("roost-dummy-password-for-timing")
        self._slots: anyio.CapacityLimiter | None = None

    @property
    def _limiter(self) -> anyio.CapacityLimiter:
        if self._slots is None:  # made on first use, inside the running event loop
            self._slots = anyio.CapacityLimiter(hashing_slots())
        return self._slots

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Verify in a worker thread; an unknown account (``None``) costs the same time."""

        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy, password) and bool(
                    password_hash
                )
            except (VerificationError, InvalidHashError):
                return False

        return await anyio.to_thread.run_sync(verify, limiter=self._limiter)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when ``password_hash`` was made with other parameters than today's."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
