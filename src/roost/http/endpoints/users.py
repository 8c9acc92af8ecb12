"""``/api/users``: the built-in users collection, under its rules."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from roost.http.endpoints.records import get_record, list_records
from roost.records.collections import USERS


async def list_users(request: Request) -> Response:
    request.path_params["name"] = USERS
    return await list_records(request)


async def get_user(request: Request) -> Response:
    request.path_params["name"] = USERS
    return await get_record(request)
