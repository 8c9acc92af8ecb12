"""Every error Roost raises on purpose.

Services raise these; ``roost.http.problems`` alone renders them as RFC 9457
``application/problem+json``. Each class fixes a stable machine ``code`` and an HTTP
``status``; the message is for people and never holds secrets.

    RoostError                     500 internal
    ├── BadRequest                 400 bad_request
    │   ├── InvalidJSON            400 invalid_json
    │   ├── InvalidFilter          400 invalid_filter
    │   ├── InvalidCursor          400 invalid_cursor
    │   ├── InvalidId              400 invalid_id
    │   ├── LimitExceeded          400 limit_exceeded
    │   └── ValidationFailed       400 validation_failed   (carries field errors)
    ├── Unauthorized               401 unauthorized
    ├── Forbidden                  403 forbidden
    ├── NotFound                   404 not_found
    ├── MethodNotAllowed           405 method_not_allowed
    ├── Conflict                   409 conflict
    ├── ResyncRequired             410 resync_required     (the cursor's changes were pruned)
    ├── PreconditionFailed         412 precondition_failed (carries the current record)
    ├── PayloadTooLarge            413 payload_too_large
    ├── UnsupportedMediaType       415 unsupported_media_type
    ├── IdempotencyKeyReused       422 idempotency_key_reused
    ├── RateLimited                429 rate_limited
    └── Unavailable                503 unavailable
"""

from __future__ import annotations

from typing import Any, ClassVar


class RoostError(Exception):
    """Base of every error with a stable code, an HTTP status and a safe message."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class BadRequest(RoostError):
    code = "bad_request"
    status = 400
    title = "Bad request"


class InvalidJSON(BadRequest):
    code = "invalid_json"
    title = "Invalid JSON"


class InvalidFilter(BadRequest):
    code = "invalid_filter"
    title = "Invalid expression"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    title = "Invalid cursor"


class InvalidId(BadRequest):
    code = "invalid_id"
    title = "Invalid id"


class LimitExceeded(BadRequest):
    code = "limit_exceeded"
    title = "Limit exceeded"


class ValidationFailed(BadRequest):
    """A body that breaks the collection schema or naming rules; ``errors`` name the fields."""

    code = "validation_failed"
    title = "Validation failed"

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail, errors=errors or [])


class Unauthorized(RoostError):
    code = "unauthorized"
    status = 401
    title = "Unauthorized"


class Forbidden(RoostError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class NotFound(RoostError):
    code = "not_found"
    status = 404
    title = "Not found"


class MethodNotAllowed(RoostError):
    code = "method_not_allowed"
    status = 405
    title = "Method not allowed"


class Conflict(RoostError):
    code = "conflict"
    status = 409
    title = "Conflict"


class ResyncRequired(RoostError):
    """A change-log cursor older than the log's retention, or from another database: the
    client drops its cached copy and syncs again from scratch."""

    code = "resync_required"
    status = 410
    title = "Resync required"


class PreconditionFailed(RoostError):
    """``If-Match`` named a version that is no longer current; ``current`` is the record."""

    code = "precondition_failed"
    status = 412
    title = "Precondition failed"


class PayloadTooLarge(RoostError):
    code = "payload_too_large"
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(RoostError):
    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class IdempotencyKeyReused(RoostError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency key reused"


class RateLimited(RoostError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


class Unavailable(RoostError):
    code = "unavailable"
    status = 503
    title = "Service unavailable"
