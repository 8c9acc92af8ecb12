"""Collection definitions (admins only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from roost.http.context import JSONResponse, components, json_object, require_admin
from roost.records.collections import parse_definition


async def list_collections(request: Request) -> Response:
    await require_admin(request)
    found = await components(request).collections.all()
    return JSONResponse({"items": [collection.public() for collection in found]})


async def create_collection(request: Request) -> Response:
    await require_admin(request)
    body, _ = await json_object(request)
    created = await components(request).collections.create(parse_definition(body))
    return JSONResponse(created.public(), status_code=201)


async def get_collection(request: Request) -> Response:
    await require_admin(request)
    found = await components(request).collections.get(request.path_params["name"])
    return JSONResponse(found.public())


async def update_collection(request: Request) -> Response:
    await require_admin(request)
    body, _ = await json_object(request)
    updated = await components(request).collections.update(request.path_params["name"], body)
    return JSONResponse(updated.public())


async def delete_collection(request: Request) -> Response:
    await require_admin(request)
    await components(request).collections.delete(request.path_params["name"])
    return Response(status_code=204)
