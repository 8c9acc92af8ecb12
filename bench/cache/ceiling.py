"""The database ceiling of the cache bench: ``harness/dbload.py`` (the raw asyncpg driver,
Roost's pool size, asyncio tasks under uvloop) running one given statement, one process
as Roost has one worker. ``harness.ceilings.db_load`` runs the main bench's fixed SQL;
this one runs the SQL of this bench's requests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.backends import POOL
from harness.cpu import Meter
from harness.load import Load
from harness.roost import VENV_PY

DBLOAD = Path(__file__).resolve().parents[1] / "harness" / "dbload.py"
RUN_WARMUP = 0.5
"""Seconds each run spends first in its own process, not kept (connections, prepared
statements)."""


def db_load(url: str, sql: str, keys: Path, *, seconds: int, conns: int, meter: Meter) -> Load:
    """``conns`` tasks sharing Roost's pool size of asyncpg connections, each running
    ``sql`` with a random key of ``keys`` bound to ``$1``."""
    command = [VENV_PY, str(DBLOAD), "postgres", url, sql, str(keys)]
    command += ["--tasks", str(conns), "--connections", str(POOL["postgres"])]
    command += ["--seconds", str(seconds), "--warmup", str(RUN_WARMUP)]
    with meter:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"dbload failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    found = json.loads(done.stdout)
    rate = found["queries"] / found["seconds"]
    return Load(
        rps=rate,
        p50=found["p50"],
        p99=found["p99"],
        requests=found["queries"],
        errors=found["errors"],
        cpu=meter.shares(),
        rps_all=rate,
    )
