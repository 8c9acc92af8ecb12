"""The ceilings each Roost figure is divided by, measured in the same run:

- HTTP: the bare ASGI hello world on Granian, same settings and worker count (``hello.py``);
- database: the raw driver running the SQL of one (a) or (b) request at the same
  concurrency, one process per Roost worker (``dbload.py``);
- ``pgbench -S`` (select-only, built in) on the same throwaway PostgreSQL.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.backends import PGBENCH_DATABASE, POOL, SQL, Backend
from harness.client import free_port
from harness.cpu import Meter, session_pids
from harness.load import Load
from harness.pgbench import pgbench, pgbench_binary, pgbench_init
from harness.process import serving
from harness.roost import VENV_PY

HERE = Path(__file__).resolve().parent
FRAMEWORK = HERE.parent / "framework"  # apps.py: the bare ASGI app


@dataclass
class HelloServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def pids(self) -> list[int]:
        return session_pids(self.process.pid)


@contextmanager
def hello_server(workers: int, log_path: Path) -> Iterator[HelloServer]:
    """``hello.py`` with ``workers`` workers in its own session, until the block ends."""
    port = free_port()
    command = [VENV_PY, str(HERE / "hello.py"), str(port), str(workers)]
    env = {**os.environ, "PYTHONPATH": str(FRAMEWORK)}
    with serving(command, port, log_path, env) as process:
        yield HelloServer(port, process)


def db_load(
    backend: Backend,
    target: str,
    workload: str,
    keys: Path,
    *,
    workers: int,
    seconds: int,
    conns: int,
    warmup: int = 0,
) -> Load:
    """``workers`` processes of ``dbload.py``, ``conns`` tasks in all, each process with
    Roost's pool size, after ``warmup`` seconds of the same load (in the same processes);
    rates add up, latency percentiles are the processes' mean (their loads are alike)."""
    tasks = [conns // workers + (1 if i < conns % workers else 0) for i in range(workers)]
    command = [VENV_PY, str(HERE / "dbload.py"), backend.name, target, SQL[backend.name][workload]]
    with Meter(backend.groups(None)) as meter:
        processes = [
            subprocess.Popen(
                [*command, str(keys), "--tasks", str(n), "--connections", str(POOL[backend.name])]
                + ["--seconds", str(seconds), "--warmup", str(warmup)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in tasks
        ]
        outputs = [process.communicate(timeout=warmup + seconds + 60) for process in processes]
    results = []
    for process, (out, err) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"dbload failed ({process.returncode}):\n{out}{err}")
        results.append(json.loads(out))
    rate = sum(r["queries"] / r["seconds"] for r in results)
    return Load(
        rps=rate,
        p50=statistics.mean(r["p50"] for r in results),
        p99=statistics.mean(r["p99"] for r in results),
        requests=sum(r["queries"] for r in results),
        errors=sum(r["errors"] for r in results),
        cpu=meter.shares(),
        rps_all=rate,
    )


def prepare_pgbench(backend: Backend, scale: int) -> None:
    """The tables of ``pgbench -S`` (scale ``scale``) in their own database."""
    assert backend.pg is not None
    backend.pg.create_database(PGBENCH_DATABASE)
    pgbench_init(pgbench_binary(backend.pg.bindir), backend.pg.port, PGBENCH_DATABASE, scale)


def pgbench_select(backend: Backend, *, seconds: int, conns: int, threads: int) -> Load:
    """``pgbench -S -M prepared`` at the same concurrency as wrk."""
    assert backend.pg is not None
    return pgbench(
        pgbench_binary(backend.pg.bindir),
        port=backend.pg.port,
        database=PGBENCH_DATABASE,
        workload=["-S"],
        seconds=seconds,
        conns=conns,
        threads=threads,
        meter=Meter(backend.groups(None)),
        folder=backend.folder,
    )
