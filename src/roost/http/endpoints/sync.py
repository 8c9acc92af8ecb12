"""``GET /api/sync``: offline delta sync (``roost.realtime.sync``)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from roost.errors import ValidationFailed
from roost.http.context import JSONResponse, components, principal
from roost.realtime.sync import DEFAULT_LIMIT, MAX_LIMIT, sync

_INTEGER = re.compile(r"-?[0-9]{1,9}")


async def sync_changes(request: Request) -> Response:
    caller = await principal(request)
    params = request.query_params
    names = [name.strip() for value in params.getlist("collections") for name in value.split(",")]
    page = await sync(
        components(request).storage,
        caller,
        names,
        params.get("since") or None,
        _limit(params.get("limit")),
    )
    return JSONResponse({"changes": page.changes, "cursor": page.cursor, "has_more": page.has_more})


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not _INTEGER.fullmatch(raw):
        raise ValidationFailed(
            f"limit must be an integer between 1 and {MAX_LIMIT}",
            [{"field": "limit", "message": f"an integer between 1 and {MAX_LIMIT}"}],
        )
    return int(raw)
