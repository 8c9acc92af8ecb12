"""From a request to what services take: the caller, the components, a checked JSON body."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from roost.auth.principal import ANONYMOUS, Principal
from roost.auth.tokens import AccessClaims
from roost.components import Components
from roost.errors import (
    BadRequest,
    Forbidden,
    InvalidJSON,
    LimitExceeded,
    Unauthorized,
    UnsupportedMediaType,
)
from roost.logs import note_caller
from roost.settings import Settings
from roost.types import JSON, JSONObject

INEXACT_FLOAT = float(2**63)
"""orjson reads integer literals from here on (outside int64/uint64) as floats."""


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def components(request: HTTPConnection) -> Components:
    found: Components = request.app.state.components
    return found


def access_claims(request: Request) -> AccessClaims | None:
    """The verified claims of ``Authorization: Bearer <access token>``; None without one.
    The user is noted for the request's access line."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <access token>'")
    claims = components(request).tokens.verify(token.strip())
    note_caller(claims.user_id)
    return claims


async def principal(request: Request) -> Principal:
    """The caller named by ``Authorization: Bearer <access token>``; none means anonymous."""
    claims = access_claims(request)
    return ANONYMOUS if claims is None else claims.principal()


async def require_admin(request: Request) -> Principal:
    caller = await principal(request)
    if caller.id is None:
        raise Unauthorized("this endpoint needs an admin token")
    if not caller.is_admin:
        raise Forbidden("this endpoint is for admins only")
    return caller


async def raw_body(request: Request) -> bytes:
    """The body, after checking that it is declared as JSON."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")
    return await request.body()


def decode_json(body: bytes, settings: Settings) -> JSON:
    """Parse ``body`` and hold it to the configured depth, key count and string length."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith("depth limit exceeded"):  # orjson's own limit, far above ours
            raise _too_deep(settings) from None
        raise InvalidJSON(f"the body is not valid JSON: {exc.msg} at byte {exc.pos}") from None
    if check_limits(value, settings):
        value = json.loads(body)  # exact integers, so validation refuses them by name
    return value


def _too_deep(settings: Settings) -> LimitExceeded:
    return LimitExceeded(f"the JSON nests deeper than {settings.max_json_depth} levels")


def check_limits(value: JSON, settings: Settings) -> bool:
    """Raise LimitExceeded on a breach; True if a number may be an integer orjson read inexactly.

    orjson reads an integer literal outside the 64-bit range as a float, silently.
    """
    inexact = False
    stack: list[tuple[JSON, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float):
            inexact = inexact or abs(item) >= INEXACT_FLOAT
            continue
        if isinstance(item, str):
            if len(item) > settings.max_string_length:
                raise LimitExceeded(
                    f"a string is longer than {settings.max_string_length} characters"
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > settings.max_json_depth:
            raise _too_deep(settings)
        if isinstance(item, dict):
            if len(item) > settings.max_json_keys:
                raise LimitExceeded(f"an object has more than {settings.max_json_keys} keys")
            for key, child in item.items():
                if len(key) > settings.max_string_length:
                    raise LimitExceeded("an object key is too long")
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)
    return inexact


async def json_object(request: Request) -> tuple[JSONObject, bytes]:
    """The body as a JSON object, and its raw bytes (for idempotency fingerprints)."""
    body = await raw_body(request)
    value = decode_json(body, components(request).settings)
    if not isinstance(value, dict):
        raise InvalidJSON("the body must be a JSON object")
    return value, body


def int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


def version_tag(version: int) -> str:
    return f'"{version}"'


def parse_version_tag(value: str, header: str) -> int:
    """``"3"``, ``W/"3"`` or ``3`` → 3; anything else is a 400."""
    tag = value.strip().removeprefix("W/").strip('"')
    if not (tag.isascii() and tag.isdigit()) or len(tag) > 18:  # "²".isdigit() is True
        raise BadRequest(f'{header} must be a record version such as "3"')
    return int(tag)
