"""Password hashing with argon2id, always off the event loop."""

from __future__ import annotations

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


class Passwords:
    """argon2id at the configured cost; hashes made at another cost are redone on login."""

    def __init__(self, time_cost: int, memory_kib: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self._dummy = self._hasher.hash("roost-dummy-password-for-timing")

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Verify in a worker thread; an unknown account (``None``) costs the same time."""

        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy, password) and bool(
                    password_hash
                )
            except (VerificationError, InvalidHashError):
                return False

        return await anyio.to_thread.run_sync(verify)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when ``password_hash`` was made with other parameters than today's."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
