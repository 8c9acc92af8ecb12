"""``create_app(settings)``: the ASGI application; its lifespan opens and closes Components."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from roost.components import open_components
from roost.http.client import TrustedProxies
from roost.http.middleware import BodyLimit, Compress, Cors, ReadYourWrites, RequestId
from roost.http.problems import EXCEPTION_HANDLERS
from roost.http.routes import ROUTES
from roost.settings import Settings

EXPOSED_HEADERS = ["ETag", "X-Request-Id", "Roost-Position"]
ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
    "Roost-Position",
    "X-Request-Id",
]


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_components(settings) as components:
            app.state.components = components
            yield

    middleware = [Middleware(RequestId, access_log=settings.log_level in ("debug", "info"))]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                Cors,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=ALLOWED_HEADERS,
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
            )
        )
    middleware += [
        Middleware(Compress, minimum_size=settings.gzip_min_bytes, compresslevel=6),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
    ]
    if settings.database_replica_urls:
        middleware.append(Middleware(ReadYourWrites))
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.trusted_proxies = TrustedProxies(settings.trusted_proxies)
    return app
