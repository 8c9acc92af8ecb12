"""Pure ASGI middleware: request id, access log and errors; gzip, CORS, body size limit,
read-your-writes."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import structlog
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roost.errors import BadRequest, PayloadTooLarge
from roost.http.client import client_ip
from roost.http.problems import error_response, problem
from roost.logs import CALLER, REQUEST_ID, Caller
from roost.metrics import Metrics
from roost.storage.base import CONSISTENCY, Consistency, format_lsn, parse_lsn

if TYPE_CHECKING:
    from roost.tracing import Tracing

REQUEST_ID_HEADER = b"x-request-id"
POSITION_HEADER = b"roost-position"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("roost.access")


class Requests:
    """The outermost layer: the request id, the access log, request metrics, and errors
    as problems.

    Uses the client's ``X-Request-Id`` when it is sane, else makes one, and echoes it. The
    id lives in ``roost.logs.REQUEST_ID`` for the request's duration, so every log line
    written while serving it carries the id. One access line per request (and per
    WebSocket connection, when it ends) at ``info``: the route template, never the path or
    query, and the user that ``roost.logs.note_caller`` recorded, never a credential.
    With tracing on, each HTTP request is a span (``roost.tracing``).
    The last resort for errors (endpoints' errors are answered by the router, inside the
    other middleware): one raised below becomes its problem response, unless the response
    had already started. Each request is counted in the app's ``Metrics`` by its route
    template (which the router puts in the scope), never by its path.
    """

    def __init__(self, app: ASGIApp, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self.access_log:
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status = 0
        sent = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id)]
            else:
                sent += len(message.get("body", b""))
            await send(message)

        token = REQUEST_ID.set(request_id.decode())
        caller = Caller() if self.access_log else None
        caller_token = CALLER.set(caller)
        tracing = _tracing(scope)
        span = None
        if tracing is not None:
            span = tracing.start(scope["method"], scope["headers"], request_id.decode())
        metrics = _metrics(scope)
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status:  # too late to answer with a problem
                raise
            response = error_response(exc, scope["method"], scope["path"])
            await response(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route_template")
            if metrics is not None:
                metrics.in_flight.dec()
                metrics.request_done(scope["method"], route, status, seconds)
            if span is not None:
                span.end(route, status)
            if caller is not None:
                line: dict[str, Any] = {"trace_id": span.trace_id} if span is not None else {}
                log.info(
                    "request",
                    method=scope["method"],
                    route=route,
                    status=status,
                    duration_ms=round(seconds * 1000, 2),
                    user_id=caller.user_id,
                    client=client_ip(scope, scope["app"].state.trusted_proxies),
                    bytes_out=sent,
                    **line,
                )
            CALLER.reset(caller_token)
            REQUEST_ID.reset(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket connection with its request id and caller bound; one access line when
        it ends, with the close code (the server's, else the client's)."""
        started = time.perf_counter()
        code: int | None = None

        async def watch_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "websocket.close" and code is None:
                code = message.get("code", 1000)
            await send(message)

        async def watch_receive() -> Message:
            nonlocal code
            message = await receive()
            if message["type"] == "websocket.disconnect" and code is None:
                code = message.get("code", 1005)
            return message

        token = REQUEST_ID.set(_request_id(scope).decode())
        caller = Caller()
        caller_token = CALLER.set(caller)
        try:
            await self.app(scope, watch_receive, watch_send)
        finally:
            log.info(
                "websocket",
                route=getattr(scope.get("route"), "path", None),  # set by Starlette's router
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                user_id=caller.user_id,
                client=client_ip(scope, scope["app"].state.trusted_proxies),
                close_code=code,
            )
            CALLER.reset(caller_token)
            REQUEST_ID.reset(token)


def _request_id(scope: Scope) -> bytes:
    """The client's ``X-Request-Id`` when it is sane, else a new one."""
    request_id = b""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            request_id = value
    return request_id or _new_ids.next()


class _RequestIds:
    """32 hex digits: 16 random to this process, then a count. Unique across processes and
    instances like random ids, without a system call for each request (``os.urandom``
    took about 5% of a small request's time); made again in each forked worker."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def next(self) -> bytes:
        return f"{self._prefix}{next(self._count):016x}".encode()


_new_ids = _RequestIds()
os.register_at_fork(after_in_child=_new_ids.restart)


def _metrics(scope: Scope) -> Metrics | None:
    """The app's metrics; None before its components are open."""
    components = getattr(scope["app"].state, "components", None)
    return None if components is None else components.metrics


def _tracing(scope: Scope) -> Tracing | None:
    """The app's tracing; None when off, or before its components are open."""
    components = getattr(scope["app"].state, "components", None)
    return None if components is None else components.tracing


class Compress(GZipMiddleware):
    """Starlette's gzip, out of the way of a client that does not accept it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"accept-encoding" and b"gzip" in value.lower():
                    await super().__call__(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class Cors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as problem+json like any 4xx."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        return problem(BadRequest(bytes(response.body).decode()))


DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
"""How much of a refused body is read and dropped so the client sees the 413, not a reset."""


class BodyLimit:
    """Refuse bodies over ``max_bytes``: by ``Content-Length`` at once, else while reading.

    A refused body is read and dropped (up to ``DRAIN_LIMIT_BYTES``) before the answer, since
    closing a socket with unread data makes the peer see a reset instead of the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _drain(receive, more_body=value.isdigit())
                response = problem(self._error(), {"Connection": "close"})
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    await _drain(receive, more_body=message.get("more_body", False))
                    raise self._error()
            return message

        await self.app(scope, limited_receive, send)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes")


async def _drain(receive: Receive, more_body: bool) -> None:
    drained = 0
    while more_body and drained < DRAIN_LIMIT_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        more_body = message.get("more_body", False)


class ReadYourWrites:
    """With read replicas: a request's ``Roost-Position`` (the latest one the client was
    given) keeps its reads off replicas that have not replayed that far; a response to a
    request that wrote carries the new position. Clients send back the last one they got.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        consistency = Consistency()
        for name, value in scope["headers"]:
            if name == POSITION_HEADER:
                try:
                    consistency.after = parse_lsn(value.decode("ascii"))
                except ValueError:
                    error = BadRequest("Roost-Position must be a position this server gave")
                    await problem(error)(scope, receive, send)
                    return

        async def send_with_position(message: Message) -> None:
            if message["type"] == "http.response.start" and consistency.written:
                position = format_lsn(max(consistency.after, consistency.written)).encode()
                message["headers"] = [*message.get("headers", []), (POSITION_HEADER, position)]
            await send(message)

        token = CONSISTENCY.set(consistency)
        try:
            await self.app(scope, receive, send_with_position)
        finally:
            CONSISTENCY.reset(token)
