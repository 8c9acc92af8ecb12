"""``/api/auth/...``: sign-up, sign-in, guests, refresh, sessions and the account."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from roost.auth.sessions import Device
from roost.http.context import JSONResponse, components, json_object, principal
from roost.types import JSONObject


def device(request: Request, body: JSONObject) -> Device:
    name = body.get("device")
    return Device(
        name=name if isinstance(name, str) else "",
        user_agent=request.headers.get("user-agent", ""),
        ip=request.client.host if request.client else "",
    )


async def signup(request: Request) -> Response:
    body, _ = await json_object(request)
    signed_in = await components(request).accounts.signup(
        body.get("email"), body.get("password"), device(request, body), body.get("data") or {}
    )
    return JSONResponse(signed_in.public(), status_code=201)


async def login(request: Request) -> Response:
    body, _ = await json_object(request)
    signed_in = await components(request).accounts.login(
        body.get("email"), body.get("password"), device(request, body)
    )
    return JSONResponse(signed_in.public())


async def anonymous(request: Request) -> Response:
    body, _ = await json_object(request)
    signed_in = await components(request).accounts.anonymous(device(request, body))
    return JSONResponse(signed_in.public(), status_code=201)


async def upgrade(request: Request) -> Response:
    body, _ = await json_object(request)
    signed_in = await components(request).accounts.upgrade(
        await principal(request), body.get("email"), body.get("password")
    )
    return JSONResponse(signed_in.public())


async def refresh(request: Request) -> Response:
    body, _ = await json_object(request)
    signed_in = await components(request).accounts.refresh(body.get("refresh_token"))
    return JSONResponse(signed_in.public())


async def logout(request: Request) -> Response:
    await components(request).accounts.logout(await principal(request))
    return Response(status_code=204)


async def list_sessions(request: Request) -> Response:
    found = await components(request).accounts.sessions(await principal(request))
    return JSONResponse({"items": found})


async def revoke_session(request: Request) -> Response:
    await components(request).accounts.revoke_session(
        await principal(request), request.path_params["id"]
    )
    return Response(status_code=204)


async def revoke_other_sessions(request: Request) -> Response:
    revoked = await components(request).accounts.revoke_other_sessions(await principal(request))
    return JSONResponse({"revoked": revoked})


async def get_me(request: Request) -> Response:
    return JSONResponse(await components(request).accounts.me(await principal(request)))


async def update_me(request: Request) -> Response:
    body, _ = await json_object(request)
    user = await components(request).accounts.update_me(await principal(request), body)
    return JSONResponse(user)


async def delete_me(request: Request) -> Response:
    await components(request).accounts.delete_me(await principal(request))
    return Response(status_code=204)


async def change_password(request: Request) -> Response:
    body, _ = await json_object(request)
    await components(request).accounts.change_password(
        await principal(request), body.get("current_password"), body.get("new_password")
    )
    return Response(status_code=204)
