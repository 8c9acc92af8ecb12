"""Benchmark apps. Each module-level name is an ASGI app served by run.py.

bare       - raw ASGI callable, small JSON body (pre-encoded)
star_pure  - Starlette, one route, orjson Response, two pure-ASGI middlewares
star_base  - same, but both middlewares are BaseHTTPMiddleware
"""

import itertools

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import Response
from starlette.routing import Route

PAYLOAD = {"message": "hello", "ok": True}
BODY = orjson.dumps(PAYLOAD)
_ids = itertools.count()


# --- 1/2: bare ASGI -------------------------------------------------------
async def bare(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


# --- 3: Starlette + pure ASGI middleware ---------------------------------
class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


async def hello(request):
    return ORJSONResponse(PAYLOAD)


class RequestIdMiddleware:
    """Adds an x-request-id response header."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = str(next(_ids)).encode()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        await self.app(scope, receive, send_wrapper)


class ServerHeaderMiddleware:
    """Adds a static x-backend response header."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-backend", b"bench")]
            await send(message)

        await self.app(scope, receive, send_wrapper)


routes = [Route("/", hello)]
star_pure = Starlette(
    routes=routes, middleware=[Middleware(RequestIdMiddleware), Middleware(ServerHeaderMiddleware)]
)


# --- 4: Starlette + BaseHTTPMiddleware -----------------------------------
class RequestIdBase(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["x-request-id"] = str(next(_ids))
        return response


class ServerHeaderBase(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["x-backend"] = "bench"
        return response


star_base = Starlette(
    routes=routes, middleware=[Middleware(RequestIdBase), Middleware(ServerHeaderBase)]
)
