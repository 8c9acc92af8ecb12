"""Per-request framework overhead without any server/network (µs per request).

Calls each app in apps.py directly with a minimal HTTP scope, so the numbers
isolate Starlette routing + middleware cost from the server.
Usage: <project venv>/bin/python inproc.py
"""

import asyncio
import time

import apps

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"x")],
    "server": ("127.0.0.1", 80),
    "client": ("127.0.0.1", 1),
}


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message):
    pass


async def per_request_us(app, n=5000):
    for _ in range(200):  # warm-up
        await app(dict(SCOPE), receive, send)
    t = time.perf_counter()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    return (time.perf_counter() - t) / n * 1e6


async def main():
    for name in ("bare", "star_pure", "star_base"):
        print(f"{name:10s} {await per_request_us(getattr(apps, name)):8.1f} us/request")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
