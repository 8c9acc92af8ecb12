"""``create_app(settings)``: the ASGI application; its lifespan opens and closes Components."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route
from starlette.routing import Router as StarletteRouter
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from roost.components import open_components
from roost.http.client import TrustedProxies
from roost.http.middleware import BodyLimit, Compress, Cors, ReadYourWrites, Requests
from roost.http.problems import error_response
from roost.http.routes import routes_for
from roost.settings import Settings

log = structlog.get_logger("roost")

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


DRAIN_SIGNAL = signal.SIGUSR1
"""What ``roost serve`` sends each worker when the instance begins to shut down: from then
``/api/ready`` answers 503 and realtime connections close with "reconnect elsewhere"."""


@contextmanager
def on_signal(signum: int, handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler()`` on the event loop when the process receives ``signum``, for the
    block's duration (nothing when the loop does not run in the main thread)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signum, handler)
    except (RuntimeError, ValueError):  # not the main thread: nobody signals this app
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signum)


class Router(StarletteRouter):
    """Starlette's router, calling a matched endpoint directly and turning what it raises
    into its problem response (``problems.error_response``), here, inside every
    middleware (so CORS and gzip apply to errors too): no per-request layers for
    Starlette's exception handlers."""

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan and WebSockets
            await super().app(scope, receive, send)
            return
        allowed: set[str] = set()
        for route in self.routes:
            if not isinstance(route, Route):  # a WebSocket route
                continue
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                scope["route_template"] = route.path  # for metrics and the access log
                try:
                    response = await route.endpoint(Request(scope, receive, send))
                except Exception as exc:
                    response = error_response(exc, scope["method"], scope["path"])
                await response(scope, receive, send)
                return
            if match is Match.PARTIAL:
                allowed |= route.methods or set()
        if allowed:
            missing = HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        else:
            missing = HTTPException(404)
        await error_response(missing, scope["method"], scope["path"])(scope, receive, send)


class App(Starlette):
    """Starlette with ``Router`` and only Roost's middleware (``Requests`` outermost, the
    last resort for errors), without Starlette's two exception layers."""

    def __init__(
        self, routes: Sequence[BaseRoute], middleware: list[Middleware], lifespan: Lifespan[App]
    ) -> None:
        super().__init__(middleware=middleware, lifespan=lifespan)
        self.router = Router(routes, lifespan=lifespan)

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def create_app(settings: Settings) -> App:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        async with open_components(settings) as components:
            app.state.components = components
            app.state.draining = False

            def drain() -> None:
                log.info("instance_draining")
                app.state.draining = True
                components.realtime.drain()

            with on_signal(DRAIN_SIGNAL, drain):
                yield

    middleware = [Middleware(Requests, access_log=settings.log_level in ("debug", "info"))]
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
    app = App(routes_for(settings.role), middleware, lifespan)
    app.state.trusted_proxies = TrustedProxies(settings.trusted_proxies)
    return app
