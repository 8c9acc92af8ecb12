"""Realtime transports: ``GET /api/realtime`` (WebSocket) and ``GET /api/realtime/sse``.

Both run a ``realtime.session.Session``: one task writes its queue to the client, one
reads the client (messages, or the disconnect); the instance's clock closes sessions
that are overdue (token expired, client silent, a send stuck). When the session closes,
both tasks stop and the connection ends with the session's close reason.
``docs/reference/realtime.md`` is the protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from roost.auth.principal import ANONYMOUS
from roost.errors import Unavailable
from roost.http.client import client_ip
from roost.http.context import access_claims, components
from roost.realtime.session import CLOSE_GOING_AWAY, SEND_SECONDS, Close, Session

CLIENT_LEFT = Close(1000, "the client left")

log = structlog.get_logger("roost.realtime")


async def socket(websocket: WebSocket) -> None:
    realtime = components(websocket).realtime
    trusted = websocket.app.state.trusted_proxies
    await websocket.accept()
    session = Session(realtime, client_ip(websocket.scope, trusted))

    async def send(frame: bytes) -> None:
        await websocket.send({"type": "websocket.send", "text": frame.decode()})

    async def read() -> None:
        while session.closed is None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                session.close(CLIENT_LEFT)
                return
            await session.receive(message.get("text") or message.get("bytes") or b"")

    await _serve(session, send, read)
    reason = session.closed or CLOSE_GOING_AWAY
    if reason is not CLIENT_LEFT:
        try:  # behind what the client has not read yet: as long as a stuck send may take
            async with asyncio.timeout(SEND_SECONDS):
                await websocket.close(reason.code, reason.reason)
        except Exception:  # the client went away or stopped reading: nothing to tell it
            pass
    user = session.principal.id if session.principal is not None else None
    seconds = round(time.monotonic() - session.opened, 1)
    log.info("realtime_closed", code=reason.code, reason=reason.reason, user=user, s=seconds)


async def sse(request: Request) -> Response:
    """One subscription as Server-Sent Events; ``Last-Event-ID`` (or ``since``) resumes."""
    realtime = components(request).realtime
    if realtime.draining:
        raise Unavailable("the server is restarting; reconnect and resume")
    trusted = request.app.state.trusted_proxies
    claims = access_claims(request)
    params = request.query_params
    since = request.headers.get("last-event-id") or params.get("since") or None
    session = Session(realtime, client_ip(request.scope, trusted), sse_frame, listens=False)
    try:  # a session refused here must not stay on the instance's clock
        if claims is None:
            session.authenticate(ANONYMOUS, None)
        else:
            session.authenticate(claims.principal(), claims.expires)
        await session.subscribe("sse", params.get("collection"), params.get("filter"), since)
    except BaseException:
        session.close(CLIENT_LEFT)
        raise
    return EventStream(session)


def sse_frame(kind: str, message: dict[str, Any], cursor: str | None) -> bytes:
    """A message as one Server-Sent Event: ``event`` is the op for record events, the
    message type otherwise; ``id`` is the cursor when the message has one; pings are
    comments."""
    if kind == "ping":
        return b": ping\n\n"
    name = message["op"] if kind == "event" else kind
    head = f"id: {cursor}\n" if cursor is not None else ""
    return f"{head}event: {name}\ndata: ".encode() + orjson.dumps(message) + b"\n\n"


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, session: Session) -> None:
        self.session = session
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self.session
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def write(frame: bytes) -> None:
            await send({"type": "http.response.body", "body": frame, "more_body": True})

        async def read() -> None:
            while session.closed is None:
                if (await receive())["type"] == "http.disconnect":
                    session.close(CLIENT_LEFT)

        await _serve(session, write, read)
        try:
            async with asyncio.timeout(1.0):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # the client is gone
            pass


async def _serve(
    session: Session,
    send: Callable[[bytes], Awaitable[None]],
    read: Callable[[], Awaitable[None]],
) -> None:
    """Write the session's frames and read the client until the session closes; closing
    it (from anywhere: the clock, a full queue, the client leaving) stops both, even a
    send the client does not take."""

    async def write() -> None:
        while (frame := await session.next_frame()) is not None:
            session.sending_since = time.monotonic()
            await send(frame)
            session.sending_since = None

    async def guarded(work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except Exception as exc:  # the connection broke: the session ends
            if session.closed is None:
                log.info("realtime_connection_lost", error=type(exc).__name__)
            session.close(CLIENT_LEFT)

    tasks = [asyncio.create_task(guarded(read)), asyncio.create_task(guarded(write))]

    def stop() -> None:
        for task in tasks:
            task.cancel()

    session.on_close(stop)
    try:
        await asyncio.wait(tasks)
    finally:
        session.close(CLOSE_GOING_AWAY)
        await asyncio.gather(*tasks, return_exceptions=True)
