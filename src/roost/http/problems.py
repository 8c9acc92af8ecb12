"""The only renderer of errors: RFC 9457 ``application/problem+json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from roost.errors import MethodNotAllowed, NotFound, RoostError, Unavailable
from roost.storage.base import StorageError

PROBLEM_TYPE = "https://roost.dev/problems/"
log = structlog.get_logger("roost.http")


def problem(
    error: RoostError, headers: Mapping[str, str] | None = None, status: int | None = None
) -> Response:
    status = status or error.status
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + error.code,
        "title": error.title,
        "status": status,
        "detail": error.detail,
        "code": error.code,
        **error.extra,
    }
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


async def roost_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RoostError)
    retry_after = exc.extra.get("retry_after")
    return problem(exc, {"Retry-After": str(retry_after)} if retry_after else None)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, wrong method) in the same shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return problem(MethodNotAllowed(f"{request.method} is not allowed here"), exc.headers)
    if exc.status_code == 404:
        return problem(NotFound(f"no endpoint at {request.url.path[:200]}"))
    return problem(RoostError(str(exc.detail)), exc.headers, status=exc.status_code)


async def storage_error(request: Request, exc: Exception) -> Response:
    """The database failed or stayed busy: retryable. Nothing was acknowledged; a write
    whose connection died during its COMMIT may still have happened, so a retry with the
    same ``Idempotency-Key`` (or client-made id) is the safe one."""
    log.warning("storage error", error=str(exc), path=request.url.path)
    error = Unavailable("the database is busy or unavailable; retry shortly")
    return problem(error, {"Retry-After": "1"})


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: log it with the request id; tell the client nothing about the inside."""
    log.exception("unhandled error", path=request.url.path, method=request.method)
    error = RoostError("the server failed; the request id identifies it in the logs")
    return problem(error)


EXCEPTION_HANDLERS = {
    RoostError: roost_error,
    HTTPException: http_error,
    StorageError: storage_error,
    Exception: unexpected_error,
}
