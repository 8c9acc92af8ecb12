"""The only renderer of errors: RFC 9457 ``application/problem+json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from starlette.exceptions import HTTPException
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


def error_response(exc: Exception, method: str, path: str) -> Response:
    """The answer to a request that raised ``exc``; call it in the ``except`` block, so an
    unexpected error is logged with its traceback."""
    if isinstance(exc, RoostError):
        retry_after = exc.extra.get("retry_after")
        return problem(exc, {"Retry-After": str(retry_after)} if retry_after else None)
    if isinstance(exc, HTTPException):  # Starlette's own: no such route, wrong method
        if exc.status_code == 405:
            return problem(MethodNotAllowed(f"{method} is not allowed here"), exc.headers)
        if exc.status_code == 404:
            return problem(NotFound(f"no endpoint at {path[:200]}"))
        return problem(RoostError(str(exc.detail)), exc.headers, status=exc.status_code)
    if isinstance(exc, StorageError):
        # The database failed or stayed busy: retryable. Nothing was acknowledged; a write
        # whose connection died during its COMMIT may still have happened, so a retry with
        # the same Idempotency-Key (or client-made id) is the safe one.
        log.warning("storage error", error=str(exc), path=path)
        return problem(
            Unavailable("the database is busy or unavailable; retry shortly"), {"Retry-After": "1"}
        )
    # a bug: log it with the request id; tell the client nothing about the inside
    log.exception("unhandled error", path=path, method=method)
    return problem(RoostError("the server failed; the request id identifies it in the logs"))
