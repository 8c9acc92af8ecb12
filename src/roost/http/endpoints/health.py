"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from roost.errors import Unavailable
from roost.http.context import JSONResponse, components

READY_TIMEOUT_SECONDS = 2.0


async def health(request: Request) -> Response:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """200 when the database answers, else 503. A broker that is down is reported, not
    fatal: realtime then reads the change log on a timer, so the instance still serves."""
    storage = components(request).storage
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with storage.read() as conn:
                await conn.fetch_one("SELECT 1 AS ok")
    except Exception as exc:  # whatever stops the probe (timeout, closed connection) is "not ready"
        raise Unavailable(f"database: {type(exc).__name__}", checks={"database": "down"}) from None
    broker = "ok" if components(request).broker.healthy else "down"
    return JSONResponse({"status": "ready", "checks": {"database": "ok", "broker": broker}})
