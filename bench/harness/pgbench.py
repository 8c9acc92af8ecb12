"""``pgbench`` runs as a ``Load``: a script (``-f``) or a built-in (``-S``) over TCP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.client import HOST
from harness.cpu import Meter
from harness.load import Load


def pgbench_binary(bindir: Path) -> str:
    """pgbench next to the server's binaries, else on PATH."""
    local = bindir / "pgbench"
    found = str(local) if local.is_file() else shutil.which("pgbench")
    if found is None:
        raise RuntimeError("pgbench not found: apt-get install postgresql-contrib")
    return found


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def pgbench_init(binary: str, port: int, database: str, scale: int) -> None:
    """``pgbench -i -s SCALE`` (the tables of ``-S``) in ``database``."""
    done = subprocess.run(
        [binary, "-i", "-q", "-s", str(scale), "-h", HOST, "-p", str(port), "-U", "postgres"]
        + [database],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pgbench -i failed:\n{done.stdout}{done.stderr}")


def pgbench(
    binary: str,
    *,
    port: int,
    database: str,
    workload: Sequence[str],
    seconds: int,
    conns: int,
    threads: int,
    meter: Meter,
    folder: Path,
) -> Load:
    """``pgbench -n -M prepared -cCONNS -jTHREADS -TSECONDS WORKLOAD`` (e.g. ``-S``, or
    ``-f script.sql``); latency percentiles from its per-transaction log (``-l``)."""
    logs = Path(tempfile.mkdtemp(prefix="pgbench-", dir=folder))
    command = [
        binary,
        "-n",
        "-M",
        "prepared",
        f"-c{conns}",
        f"-j{min(threads, conns)}",
        f"-T{seconds}",
        "-l",
        f"--log-prefix={logs / 'tx'}",
        *workload,
        "-h",
        HOST,
        "-p",
        str(port),
        "-U",
        "postgres",
        database,
    ]
    with meter:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=logs,
            timeout=seconds + 60,
            check=False,
        )
    out = done.stdout + done.stderr
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if done.returncode != 0 or not tps:
        raise RuntimeError(f"pgbench failed ({done.returncode}):\n{out}")
    latencies = sorted(  # per transaction: client_id transaction_no time_us script_no ...
        int(line.split()[2]) for path in logs.glob("tx*") for line in path.open()
    )
    failed = re.search(r"number of failed transactions: (\d+)", out)
    shutil.rmtree(logs, ignore_errors=True)

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000

    return Load(
        rps=float(tps.group(1)),
        p50=percentile(0.50),
        p99=percentile(0.99),
        requests=len(latencies),
        errors=int(failed.group(1)) if failed else 0,
        cpu=meter.shares(),
        rps_all=float(tps.group(1)),
    )
