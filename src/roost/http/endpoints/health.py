"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from roost.cache.base import CacheUnavailable
from roost.errors import Unavailable
from roost.http.context import JSONResponse, components
from roost.records.cache import RecordCache

READY_TIMEOUT_SECONDS = 2.0


async def health(request: Request) -> Response:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """200 when the database answers, else 503 (also from the moment the instance begins
    to shut down, so load balancers move away while it finishes its requests). A broker
    or cache that is down is reported, not fatal: realtime then reads the change log on a
    timer, and reads go to the database, so the instance still serves."""
    if request.app.state.draining:
        raise Unavailable("shutting down", checks={"instance": "draining"})
    storage = components(request).storage
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with storage.read() as conn:
                await conn.fetch_one("SELECT 1 AS ok")
    except Exception as exc:  # whatever stops the probe (timeout, closed connection) is "not ready"
        raise Unavailable(f"database: {type(exc).__name__}", checks={"database": "down"}) from None
    found = components(request)
    checks = {
        "database": "ok",
        "broker": "ok" if found.broker.healthy else "down",
        "cache": await _cache_check(found.record_cache),
    }
    return JSONResponse({"status": "ready", "checks": checks})


async def _cache_check(record_cache: RecordCache | None) -> str:
    """``ok``, ``off`` (nothing cached), ``down`` (its store does not answer) or
    ``pending`` (it answers again, but this instance still has invalidations to deliver,
    so it reads from the database meanwhile)."""
    if record_cache is None:
        return "off"
    try:
        await record_cache.cache.get("roost:ready")
    except CacheUnavailable:
        return "down"
    return "ok" if record_cache.usable() else "pending"
