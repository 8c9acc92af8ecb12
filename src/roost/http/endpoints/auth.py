"""``/api/auth/...``: sign-up, sign-in, guests, refresh, sessions and the account."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response

from roost.auth.sessions import Device
from roost.errors import RateLimited, ValidationFailed
from roost.http.client import TrustedProxies
from roost.http.context import JSONResponse, components, json_object, principal
from roost.types import JSONObject


def client_address(request: Request) -> str:
    proxies: TrustedProxies = request.app.state.trusted_proxies
    return proxies.client_ip(request.scope)


def device(request: Request, body: JSONObject) -> Device:
    name = body.get("device")
    return Device(
        name=name if isinstance(name, str) else "",
        user_agent=request.headers.get("user-agent", ""),
        ip=client_address(request),
    )


async def limit_attempts(request: Request, account: object = None) -> None:
    """Count a sign-in attempt per client address and, when named, per account."""
    parts = components(request)
    settings, limiter = parts.settings, parts.ratelimiter
    limit = "auth-ip"
    wait = await limiter.hit(settings.auth_rate_limit_ip, limit, client_address(request))
    if wait is None and isinstance(account, str) and account:
        key = account.strip().lower()[:320]
        limit = "auth-account"
        wait = await limiter.hit(settings.auth_rate_limit_account, limit, key)
    if wait is not None:
        parts.metrics.rejected(limit, request.scope.get("route_template"))
        seconds = max(1, math.ceil(wait))
        raise RateLimited(f"too many attempts; retry in {seconds} s", retry_after=seconds)


async def signup(request: Request) -> Response:
    body, _ = await json_object(request)
    await limit_attempts(request, body.get("email"))
    signed_in = await components(request).accounts.signup(
        body.get("email"), body.get("password"), device(request, body), body.get("data")
    )
    return JSONResponse(signed_in.public(), status_code=201)


async def login(request: Request) -> Response:
    body, _ = await json_object(request)
    await limit_attempts(request, body.get("email"))
    signed_in = await components(request).accounts.login(
        body.get("email"), body.get("password"), device(request, body)
    )
    return JSONResponse(signed_in.public())


async def anonymous(request: Request) -> Response:
    body, _ = await json_object(request)
    await limit_attempts(request)
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
    await limit_attempts(request)
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
    caller = await principal(request)
    await limit_attempts(request, caller.id)
    await components(request).accounts.change_password(
        caller, body.get("current_password"), body.get("new_password")
    )
    return Response(status_code=204)


async def oidc(request: Request) -> Response:
    body, _ = await json_object(request)
    await limit_attempts(request)
    token, nonce = body.get("id_token"), body.get("nonce")
    if not isinstance(token, str) or not (nonce is None or isinstance(nonce, str)):
        raise ValidationFailed(
            "id_token (a string) is required; nonce is a string when given",
            [{"field": "id_token", "message": "required string"}],
        )
    signed_in = await components(request).identities.sign_in(
        request.path_params["provider"], token, nonce, device(request, body)
    )
    return JSONResponse(signed_in.public())


async def forgot_password(request: Request) -> Response:
    body, _ = await json_object(request)
    await limit_attempts(request, body.get("email"))
    await components(request).recovery.forgot_password(body.get("email"))
    return JSONResponse({"status": "if the address has an account, a link is on its way"}, 202)


async def reset_password(request: Request) -> Response:
    body, _ = await json_object(request)
    await limit_attempts(request)
    await components(request).recovery.reset_password(body.get("token"), body.get("password"))
    return Response(status_code=204)


async def request_verification(request: Request) -> Response:
    caller = await principal(request)
    await limit_attempts(request, caller.id)
    await components(request).recovery.request_verification(caller)
    return JSONResponse({"status": "a confirmation link is on its way"}, 202)


async def confirm_verification(request: Request) -> Response:
    body, _ = await json_object(request)
    await limit_attempts(request)
    user = await components(request).recovery.confirm_verification(body.get("token"))
    return JSONResponse(user)
