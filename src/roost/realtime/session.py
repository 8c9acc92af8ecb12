"""One realtime connection, apart from its transport (WebSocket or Server-Sent Events).

The session keeps who the client is, its subscriptions and its bounded send queue. Live
events never wait: one that finds the queue full closes the session as a slow consumer
(``CLOSE_SLOW``), and the client resumes from the last cursor it received. Replayed
events instead wait for room, so a replay is paced by the client, never buffered whole.
The protocol is in ``docs/reference/realtime.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from roost.auth.principal import ANONYMOUS, Principal
from roost.errors import (
    Forbidden,
    InvalidFilter,
    LimitExceeded,
    RoostError,
    Unauthorized,
    ValidationFailed,
)
from roost.logs import note_caller
from roost.query.errors import ExpressionError
from roost.query.limits import MAX_FILTER_LENGTH
from roost.realtime.changes import GONE, Changed, EventOp, Reader, decode_cursor
from roost.realtime.hub import Subscription
from roost.realtime.service import Realtime
from roost.records.collections import Collection, valid_name
from roost.records.rules import list_clause, parsed, paths_of, refuse_hidden_paths
from roost.records.service import ExpressionContext

MAX_SUBSCRIPTION_ID = 64
TOKEN_LEEWAY_SECONDS = 5
"""A connection whose access token expired this long ago without an ``auth`` is closed."""
AUTH_SECONDS = 10.0
"""A WebSocket client must send ``auth`` this soon after connecting."""
SEND_SECONDS = 10.0
"""A frame the client has not taken in this long makes it a slow consumer."""


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


CLOSE_GOING_AWAY = Close(1001, "the server is shutting down; reconnect and resume")
CLOSE_RESTART = Close(1012, "the server is restarting; reconnect and resume from your cursor")
CLOSE_TOO_BIG = Close(1009, "message too big")
CLOSE_AUTH = Close(4001, "authenticate first, with a valid access token")
CLOSE_EXPIRED = Close(4001, "the access token expired; reconnect with a fresh one")
CLOSE_OTHER_USER = Close(4003, "an auth message may not change the connection's user")
CLOSE_IDLE = Close(4008, "nothing received for too long")
CLOSE_SLOW = Close(4009, "too slow to read events; reconnect and resume from your cursor")
CLOSE_TOO_MANY = Close(4029, "too many realtime connections for this user")

Frame = Callable[[str, dict[str, Any], str | None], bytes]
"""Turns (message type, message, cursor) into what the transport sends."""


def json_frame(kind: str, message: dict[str, Any], cursor: str | None) -> bytes:
    return orjson.dumps({"type": kind, **message})


class Session:
    """Created when the transport has accepted the connection, and watched by the
    instance's clock (``Realtime.watch``) until it closes. ``listens``: the client sends
    messages (WebSocket: ``auth`` first, then at least pongs); an SSE client does not."""

    def __init__(
        self, realtime: Realtime, client: str, frame: Frame = json_frame, listens: bool = True
    ) -> None:
        self.realtime = realtime
        self.principal: Principal | None = None
        self.expires: float | None = None
        self.subs: dict[str, Subscription] = {}
        self.closed: Close | None = None
        self.opened = self.last_received = self.last_sent = time.monotonic()
        self.sending_since: float | None = None
        """When the transport began the send that has not finished yet."""
        self._listens = listens
        self._on_close: list[Callable[[], None]] = []
        self._client = client
        self._frame = frame
        self._key: str | None = None
        self._limit = realtime.settings.realtime_send_queue
        self._queue: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._replays: set[asyncio.Task[None]] = set()
        realtime.watch(self)

    # the send queue

    def send(self, kind: str, message: dict[str, Any], cursor: str | None = None) -> None:
        """Queue a message now; a full queue closes the session as a slow consumer."""
        if self.closed is not None:
            return
        if len(self._queue) >= self._limit:
            self.close(CLOSE_SLOW)
            return
        self._queue.append(self._frame(kind, message, cursor))
        self._readable.set()

    async def next_frame(self) -> bytes | None:
        """The next frame to send; None once the session is closed."""
        while not self._queue or self.closed is not None:
            if self.closed is not None:
                return None
            self._readable.clear()
            await self._readable.wait()
        self._room.set()
        self.last_sent = time.monotonic()
        return self._queue.popleft()

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the session closes (the transport stops its tasks)."""
        self._on_close.append(callback)

    def drain(self) -> None:
        self.close(CLOSE_RESTART)

    def close(self, reason: Close) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        self.realtime.closes[reason.code] += 1
        self.realtime.forget(self)
        for callback in self._on_close:
            callback()
        self._queue.clear()
        self._readable.set()
        self._room.set()
        for task in self._replays:
            task.cancel()
        for sub in self.subs.values():
            self.realtime.hub.remove(sub)
        self.subs.clear()
        if self._key is not None:
            self.realtime.disconnect(self._key)
            self._key = None

    # events

    def event(
        self, sub: Subscription, op: EventOp, changed: Changed, collection: Collection
    ) -> None:
        self.send(*self._event(sub, op, changed, collection))
        self.realtime.deliveries.count(self.closed is None)

    async def replayed(
        self, sub: Subscription, op: EventOp, changed: Changed, collection: Collection
    ) -> None:
        await self.send_paced(*self._event(sub, op, changed, collection))
        self.realtime.deliveries.count(self.closed is None)

    async def send_paced(self, kind: str, message: dict[str, Any], cursor: str | None) -> None:
        """Queue a message once the queue has room (replays: never a reason to close)."""
        while len(self._queue) >= self._limit and self.closed is None:
            self._room.clear()
            await self._room.wait()
        self.send(kind, message, cursor)

    def _event(
        self, sub: Subscription, op: EventOp, changed: Changed, collection: Collection
    ) -> tuple[str, dict[str, Any], str]:
        change = changed.change
        assert self.principal is not None
        cursor = self.realtime.cursor(change.position)
        record = None if op in GONE else changed.record_for(collection, self.principal)
        message = {
            "sub": sub.id,
            "op": op,
            "collection": change.collection,
            "id": change.record_id,
            "version": change.version,
            "record": record,
            "cursor": cursor,
        }
        return "event", message, cursor

    # what the client says

    def authenticate(self, principal: Principal, expires: float | None) -> None:
        """Set (or refresh) who the client is; RoostError when it may not connect."""
        if self.principal is not None:
            if (principal.id, principal.anonymous) != (self.principal.id, self.principal.anonymous):
                self.close(CLOSE_OTHER_USER)
                return
        else:
            key = principal.id or f"address:{self._client}"
            self.realtime.connect(key)  # RateLimited when this user holds too many
            self._key = key
        self.principal, self.expires = principal, expires
        note_caller(principal.id)  # for the connection's access line
        for sub in self.subs.values():  # a refreshed token may carry another role
            sub.reader = Reader(principal, sub.reader.filter)
            self.realtime.hub.refile(sub.collection)

    async def receive(self, text: str | bytes) -> None:
        """Handle one client message; errors go back as ``error`` messages."""
        self.last_received = time.monotonic()
        if len(text) > self.realtime.settings.realtime_max_message_bytes:
            self.close(CLOSE_TOO_BIG)
            return
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(None, ValidationFailed("a message is one JSON object", []))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._error(None, ValidationFailed("a message is a JSON object with a type", []))
            return
        kind = message["type"]
        if kind == "ping":
            self.send("pong", {})
        elif kind == "pong":
            pass
        elif kind == "auth":
            await self._auth(message)
        elif self.principal is None:
            self.close(CLOSE_AUTH)
        elif kind == "subscribe":
            sub_id = message.get("id")
            try:
                await self.subscribe(
                    sub_id,
                    message.get("collection"),
                    message.get("filter"),
                    message.get("since"),
                )
            except RoostError as exc:
                self._error(sub_id if isinstance(sub_id, str) else None, exc)
        elif kind == "unsubscribe":
            self.unsubscribe(message.get("id"))
        else:
            self._error(None, ValidationFailed(f"unknown message type {kind[:40]!r}", []))

    async def _auth(self, message: dict[str, Any]) -> None:
        token = message.get("token")
        if token is not None and not isinstance(token, str):
            self._error(None, Unauthorized("token is an access token string or null"))
            self.close(CLOSE_AUTH)
            return
        try:
            if token is None:
                self.authenticate(ANONYMOUS, None)
            else:
                claims = self.realtime.tokens.verify(token)
                self.authenticate(claims.principal(), claims.expires)
        except Unauthorized as exc:
            self._error(None, exc)
            self.close(CLOSE_AUTH)
            return
        except RoostError:  # too many connections
            self.close(CLOSE_TOO_MANY)
            return
        if self.closed is None:
            assert self.principal is not None
            self.send("ack", {"of": "auth", "user": self.principal.id, "expires": self.expires})

    async def subscribe(
        self, sub_id: object, name: object, filter: object, since: object
    ) -> Subscription:
        """File a subscription and start its replay; RoostError when it cannot be made."""
        assert self.principal is not None
        principal = self.principal
        if not isinstance(sub_id, str) or not 0 < len(sub_id) <= MAX_SUBSCRIPTION_ID:
            raise ValidationFailed(f"id is a string of 1 to {MAX_SUBSCRIPTION_ID} characters", [])
        if sub_id in self.subs:
            raise ValidationFailed(f"subscription {sub_id!r} exists; unsubscribe it first", [])
        if len(self.subs) >= self.realtime.settings.realtime_max_subscriptions:
            raise LimitExceeded("too many subscriptions on this connection")
        if not isinstance(name, str):
            raise ValidationFailed("collection is a collection name", [])
        collection = await self.realtime.collection(valid_name(name))
        expression = None
        if filter is not None:
            if not isinstance(filter, str) or len(filter) > MAX_FILTER_LENGTH:
                raise InvalidFilter(f"filter is a string of at most {MAX_FILTER_LENGTH} characters")
            try:
                expression = parsed(filter)
            except ExpressionError as exc:
                raise InvalidFilter(str(exc), position=exc.position) from None
            refuse_hidden_paths(collection, principal, list(paths_of(expression)))
        context = ExpressionContext(principal)
        list_clause(collection, principal, self.realtime.storage.dialect, context)  # the gate
        if since is not None and not isinstance(since, str):
            raise ValidationFailed("since is a cursor string", [])
        log = await self.realtime.storage.log_state()
        position = log.head if since is None else decode_cursor(since, log)
        if self.closed is not None or sub_id in self.subs:
            raise Forbidden("the connection closed or the subscription exists")
        sub = Subscription(sub_id, name, Reader(principal, expression), self, position)
        self.subs[sub_id] = sub
        self.realtime.hub.add(sub, collection)
        self.send(
            "ack", {"of": "subscribe", "id": sub_id, "cursor": self.realtime.cursor(position)}
        )
        task = asyncio.create_task(self._replay(sub))
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)
        return sub

    async def _replay(self, sub: Subscription) -> None:
        try:
            await self.realtime.replay(sub, self)
        except Exception as exc:  # the database away: the client resumes later
            self._error(sub.id, exc if isinstance(exc, RoostError) else RoostError(str(exc)))
            self.close(CLOSE_GOING_AWAY)
            return
        cursor = self.realtime.cursor(sub.position)
        await self.send_paced("synced", {"sub": sub.id, "cursor": cursor}, cursor)

    def unsubscribe(self, sub_id: object) -> None:
        sub = self.subs.pop(sub_id, None) if isinstance(sub_id, str) else None
        if sub is None:
            self._error(None, ValidationFailed("no such subscription", []))
            return
        self.realtime.hub.remove(sub)
        self.send("ack", {"of": "unsubscribe", "id": sub_id})

    def _error(self, sub_id: str | None, error: RoostError) -> None:
        message: dict[str, Any] = {"code": error.code, "message": error.detail}
        if sub_id is not None:
            message["id"] = sub_id
        self.send("error", message)

    # timers

    def tick(self, now: float) -> None:
        """Close the session when it must (no ``auth`` in time, token expired, client
        silent, a send stuck); else ping a client that was sent nothing for a while."""
        reason = self._overdue(now)
        if reason is not None:
            self.close(reason)
        elif now - self.last_sent > self.realtime.settings.realtime_ping_seconds:
            self.send("ping", {})
            self.last_sent = now

    def _overdue(self, now: float) -> Close | None:
        if self.sending_since is not None and now - self.sending_since > SEND_SECONDS:
            return CLOSE_SLOW
        if self.expires is not None and time.time() > self.expires + TOKEN_LEEWAY_SECONDS:
            return CLOSE_EXPIRED
        if self._listens and self.principal is None and now - self.opened > AUTH_SECONDS:
            return CLOSE_AUTH
        if (
            self._listens
            and now - self.last_received > self.realtime.settings.realtime_idle_seconds
        ):
            return CLOSE_IDLE
        return None
