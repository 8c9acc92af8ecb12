"""``GET /api/openapi.json``."""

from __future__ import annotations

from functools import cache

from starlette.requests import Request
from starlette.responses import Response

from roost.http.context import JSONResponse
from roost.http.openapi import build_spec


@cache
def _spec() -> bytes:
    return bytes(JSONResponse(build_spec()).body)


async def openapi(request: Request) -> Response:
    return Response(_spec(), media_type="application/json")
