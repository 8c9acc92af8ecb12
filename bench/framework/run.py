#!/usr/bin/env python3
"""Reproduce the ASGI server/framework benchmark table.

Usage:  python3 run.py [case ...]          (default: all cases)
Env:    UVICORN_PY  python with uvicorn[standard] (default: <repo>/.venv/bin/python)
        GRANIAN_PY  python with granian + uvloop    (default: /tmp/gvenv/bin/python)
        DURATION=10 WARMUP=3 REPEATS=3 CONNS=50 THREADS=2 PORT=8765

Each case: start one server worker on 127.0.0.1, check the response, run a
WARMUP-second wrk warm-up, then REPEATS runs of `wrk -tTHREADS -cCONNS
-dDURATIONs --latency`; the table shows the median of each metric.
"""
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
UVICORN_PY = os.environ.get("UVICORN_PY", str(HERE.parents[1] / ".venv/bin/python"))
GRANIAN_PY = os.environ.get("GRANIAN_PY", "/tmp/gvenv/bin/python")
DURATION = int(os.environ.get("DURATION", 10))
WARMUP = int(os.environ.get("WARMUP", 3))
REPEATS = int(os.environ.get("REPEATS", 3))
CONNS = int(os.environ.get("CONNS", 50))
THREADS = int(os.environ.get("THREADS", 2))
PORT = int(os.environ.get("PORT", 8765))
URL = f"http://127.0.0.1:{PORT}/"


def uvicorn(app):
    return [UVICORN_PY, "-m", "uvicorn", f"apps:{app}", "--host", "127.0.0.1",
            "--port", str(PORT), "--workers", "1", "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning"]


def granian(app):
    return [GRANIAN_PY, "-m", "granian", f"apps:{app}", "--interface", "asgi",
            "--host", "127.0.0.1", "--port", str(PORT), "--workers", "1",
            "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]


CASES = {
    "bare-uvicorn": uvicorn("bare"),
    "bare-granian": granian("bare"),
    "starlette-pure-mw-uvicorn": uvicorn("star_pure"),
    "starlette-pure-mw-granian": granian("star_pure"),
    "starlette-basehttp-mw-uvicorn": uvicorn("star_base"),
}


def wait_port(timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", PORT), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not open port {PORT}")


def to_ms(value):
    num, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(num) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def server_cpu_seconds(sid):
    """utime+stime of every process in the server's session (master + workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 (session); fields[0] is field 3
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(seconds, sid=None):
    cpu0, t0 = (server_cpu_seconds(sid) if sid else 0.0), time.monotonic()
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNS}", f"-d{seconds}s", "--latency", URL],
        check=True, capture_output=True, text=True).stdout
    cpu = (server_cpu_seconds(sid) - cpu0) / (time.monotonic() - t0) if sid else 0.0
    errors = re.search(r"Socket errors:.*|Non-2xx.*", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "cpu": 100 * cpu,
        "errors": errors.group(0) if errors else "",
    }


def bench(name, cmd):
    proc = subprocess.Popen(cmd, cwd=HERE, start_new_session=True)
    try:
        wait_port()
        with urllib.request.urlopen(URL) as r:
            body, headers = r.read(), dict(r.headers)
        assert r.status == 200 and body == b'{"message":"hello","ok":true}', body
        if name.startswith("starlette"):
            assert "x-request-id" in headers and "x-backend" in headers, headers
        wrk(WARMUP)
        runs = [wrk(DURATION, proc.pid) for _ in range(REPEATS)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    for r in runs:
        print(f"  {name}: {r['rps']:.0f} req/s p50={r['p50']:.2f}ms "
              f"p99={r['p99']:.2f}ms cpu={r['cpu']:.0f}% {r['errors']}", file=sys.stderr)
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "cpu")}


def main():
    names = sys.argv[1:] or list(CASES)
    print(f"wrk -t{THREADS} -c{CONNS} -d{DURATION}s, warm-up {WARMUP}s, "
          f"median of {REPEATS}, nproc={os.cpu_count()}\n")
    rows = [(n, bench(n, CASES[n])) for n in names]
    print("| case | req/s | p50 (ms) | p99 (ms) | server CPU |\n|---|---:|---:|---:|---:|")
    for name, m in rows:
        print(f"| {name} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu']:.0f}% |")


if __name__ == "__main__":
    main()
