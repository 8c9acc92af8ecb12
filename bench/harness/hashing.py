"""What one login costs: one argon2id verify at the bench's and at Roost's default
parameters, timed in this process with argon2-cffi's ``PasswordHasher``, as Roost hashes."""

from __future__ import annotations

import statistics
import time

from argon2 import PasswordHasher

ROOST_DEFAULT = {"time_cost": 3, "memory_kib": 65536, "parallelism": 4}
"""``password_time_cost``, ``password_memory_kib``, ``password_parallelism`` in
src/roost/settings.py."""
PARSE = "bcrypt cost 10 (@node-rs/bcrypt; the peer measured one verify at 55 ms)"
RUNS = 3


def verify_ms(
    time_cost: int, memory_kib: int, parallelism: int, runs: int = RUNS
) -> dict[str, float | int]:
    """Median milliseconds of one ``verify`` (what a login spends hashing)."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
    password = "bench-password-not-secret"
    stored = hasher.hash(password)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        hasher.verify(stored, password)
        times.append(1000 * (time.perf_counter() - started))
    return {
        "time_cost": time_cost,
        "memory_kib": memory_kib,
        "parallelism": hasher.parallelism,
        "verify_ms": statistics.median(times),
    }
