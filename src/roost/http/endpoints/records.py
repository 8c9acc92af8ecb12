"""Records of one collection: list, create, get, merge-patch, delete."""

from __future__ import annotations

import hashlib

import orjson
from starlette.requests import Request
from starlette.responses import Response

from roost.http.context import (
    JSONResponse,
    components,
    int_param,
    json_object,
    parse_version_tag,
    principal,
    version_tag,
)
from roost.query.limits import DEFAULT_LIMIT
from roost.records.idempotency import Outcome, idempotent_request
from roost.records.service import Operation


async def list_records(request: Request) -> Response:
    params = request.query_params
    page = await components(request).records.query(
        request.path_params["name"],
        await principal(request),
        filter=params.get("filter") or None,
        sort=params.get("sort") or None,
        limit=int_param(request, "limit", DEFAULT_LIMIT),
        cursor=params.get("cursor") or None,
        fields=params.get("fields") or None,
    )
    return cacheable(request, page.body, content_tag(page.body), page.cache_control)


async def get_record(request: Request) -> Response:
    read = await components(request).records.get(
        request.path_params["name"], request.path_params["id"], await principal(request)
    )
    body = orjson.dumps(read.record)
    return cacheable(request, body, version_tag(read.record["version"]), read.cache_control)


def content_tag(body: bytes) -> str:
    """A weak ETag naming a response body (a page: its records and its cursor)."""
    return f'W/"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'


def cacheable(request: Request, body: bytes, etag: str, cache_control: str) -> Response:
    """The JSON ``body`` with its validators, or ``304`` when the client holds it already
    (``If-None-Match`` names ``etag``, weakly compared as RFC 9110 says for GET)."""
    headers = {"ETag": etag, "Cache-Control": cache_control}
    wanted = request.headers.get("if-none-match")
    if wanted is not None:
        plain = etag.removeprefix("W/")
        tags = [tag.strip().removeprefix("W/") for tag in wanted.split(",")]
        if wanted.strip() == "*" or plain in tags:
            return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def create_record(request: Request) -> Response:
    body, raw = await json_object(request)
    operation = Operation("create", request.path_params["name"], data=body)
    return await _write(request, operation, raw)


async def update_record(request: Request) -> Response:
    body, raw = await json_object(request)
    operation = Operation(
        "update",
        request.path_params["name"],
        id=request.path_params["id"],
        data=body,
        if_match=_if_match(request),
    )
    return await _write(request, operation, raw)


async def delete_record(request: Request) -> Response:
    operation = Operation(
        "delete",
        request.path_params["name"],
        id=request.path_params["id"],
        if_match=_if_match(request),
    )
    return await _write(request, operation, b"")


def _if_match(request: Request) -> int | None:
    value = request.headers.get("if-match")
    return None if value is None else parse_version_tag(value, "If-Match")


async def _write(request: Request, operation: Operation, raw: bytes) -> Response:
    caller = await principal(request)
    idempotency = idempotent_request(
        request.headers.get("idempotency-key"), caller.scope, request.method, request.url.path, raw
    )
    [outcome] = await components(request).records.write([operation], caller, idempotency)
    return render(outcome)


def render(outcome: Outcome) -> Response:
    if outcome.body is None:
        return Response(status_code=outcome.status)
    return JSONResponse(
        outcome.body,
        status_code=outcome.status,
        headers={"ETag": version_tag(outcome.body["version"])},
    )
