"""A small WebSocket client for realtime tests against a real ``roost serve``.

Imported as ``realtime.client`` (``tests/`` is on ``sys.path``). One background task
reads every frame into ``messages`` (parsed JSON, in arrival order) and answers the
server's ``ping`` with a ``pong``; tests then wait for what they expect::

    async with RealtimeClient.connect(server.url, token) as client:  # sends auth, waits for the ack
        await client.subscribe("s1", "posts")  # waits for the ack and, by default, ``synced``
        event = await client.wait_for(lambda m: m["type"] == "event", timeout=2)
        assert client.events("s1")[-1]["cursor"] == client.cursor("s1")

When the server closes the connection, ``close_code`` and ``close_reason`` are set and
``wait_closed()`` returns them; a ``wait_for`` still pending then fails at once instead of
waiting out its timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

Message = dict[str, Any]
Predicate = Callable[[Message], bool]


def ws_url(http_url: str) -> str:
    """``http://host:port`` (a ``LiveServer.url``) → ``ws://host:port/api/realtime``."""
    base = http_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + "/api/realtime"


class RealtimeClient:
    """One WebSocket connection to ``/api/realtime``.

    ``messages`` holds every JSON message received, pings included. Set ``answer_pings``
    to False to play a client that stops answering (the server then closes it, 4008).
    """

    def __init__(self, connection: ClientConnection, *, answer_pings: bool = True) -> None:
        self.connection = connection
        self.answer_pings = answer_pings
        self.messages: list[Message] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._changed = asyncio.Condition()
        self._closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        *,
        auth: bool = True,
        answer_pings: bool = True,
        timeout: float = 10.0,
    ) -> AsyncIterator[RealtimeClient]:
        """Open a connection to ``url`` (a server's ``http://`` base URL, or a full
        ``ws://`` URL) and, unless ``auth`` is False, authenticate with ``token`` (None:
        anonymous) and wait for the ack. Closes the connection on exit."""
        target = url if url.startswith(("ws://", "wss://")) else ws_url(url)
        connection = await ws_connect(
            target, open_timeout=timeout, ping_interval=None, compression=None, max_size=None
        )
        client = cls(connection, answer_pings=answer_pings)
        try:
            if auth:
                await client.auth(token, timeout=timeout)
            yield client
        finally:
            await client.close()

    # sending

    async def send(self, message: Message) -> None:
        """Send one JSON message as a text frame."""
        await self.connection.send(orjson.dumps(message).decode())

    async def auth(self, token: str | None, timeout: float = 10.0) -> Message:
        """Send ``auth`` and return the server's ack (AssertionError on anything else)."""
        start = len(self.messages)
        await self.send({"type": "auth", "token": token})
        reply = await self.wait_for(
            lambda m: m["type"] == "error" or (m["type"] == "ack" and m.get("of") == "auth"),
            timeout,
            start=start,
        )
        assert reply["type"] == "ack", reply
        return reply

    async def subscribe(
        self,
        sub_id: str,
        collection: str,
        filter: str | None = None,
        since: str | None = None,
        *,
        synced: bool = True,
        timeout: float = 10.0,
    ) -> Message:
        """Send ``subscribe`` and return its ack; with ``synced`` (the default) also wait
        until the replay is over (the ``synced`` message). AssertionError on an error."""
        start = len(self.messages)
        message: Message = {"type": "subscribe", "id": sub_id, "collection": collection}
        if filter is not None:
            message["filter"] = filter
        if since is not None:
            message["since"] = since
        await self.send(message)
        reply = await self.wait_for(
            lambda m: m["type"] in ("ack", "error") and m.get("id") == sub_id,
            timeout,
            start=start,
        )
        assert reply["type"] == "ack", reply
        if synced:
            await self.wait_for(
                lambda m: m["type"] == "synced" and m["sub"] == sub_id, timeout, start=start
            )
        return reply

    # receiving

    async def wait_for(
        self, predicate: Predicate, timeout: float = 5.0, *, start: int = 0
    ) -> Message:
        """The first message at index ``start`` or later that matches ``predicate``,
        waiting up to ``timeout`` seconds for it. TimeoutError when none came;
        ConnectionError when the server closed the connection first."""
        deadline = time.monotonic() + timeout
        index = start
        async with self._changed:
            while True:
                while index < len(self.messages):
                    if predicate(self.messages[index]):
                        return self.messages[index]
                    index += 1
                if self._closed.is_set():
                    raise ConnectionError(
                        f"closed ({self.close_code} {self.close_reason!r}) before the message came"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching message in {timeout} s")
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)

    async def wait_events(self, sub_id: str, count: int, timeout: float = 10.0) -> list[Message]:
        """Wait until subscription ``sub_id`` got at least ``count`` events; return them all."""
        seen = 0

        def counts(message: Message) -> bool:
            nonlocal seen
            if message["type"] == "event" and message["sub"] == sub_id:
                seen += 1
            return seen >= count

        if count > 0:
            try:
                await self.wait_for(counts, timeout)
            except TimeoutError:
                raise TimeoutError(f"{sub_id}: {seen} of {count} events in {timeout} s") from None
        return self.events(sub_id)

    def events(self, sub_id: str | None = None) -> list[Message]:
        """The ``event`` messages received so far (of one subscription, if named)."""
        return [
            m
            for m in self.messages
            if m["type"] == "event" and (sub_id is None or m["sub"] == sub_id)
        ]

    def cursor(self, sub_id: str) -> str | None:
        """The latest cursor the server gave for ``sub_id`` (subscribe ack, event, or
        synced): what a reconnecting client sends as ``since``."""
        for m in reversed(self.messages):
            if m.get("sub") == sub_id or (m["type"] == "ack" and m.get("id") == sub_id):
                if "cursor" in m:
                    cursor: str = m["cursor"]
                    return cursor
        return None

    async def wait_closed(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        """Wait until the server closes the connection; its (code, reason)."""
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.close_code, self.close_reason

    async def close(self) -> None:
        """Close the connection (normal closure) and stop the reader. Idempotent."""
        with suppress(Exception):
            await self.connection.close()
        if not self._reader.done():
            self._reader.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self._reader

    async def _read(self) -> None:
        try:
            async for frame in self.connection:
                message = orjson.loads(frame)
                if message.get("type") == "ping" and self.answer_pings:
                    with suppress(ConnectionClosed):
                        await self.send({"type": "pong"})
                async with self._changed:
                    self.messages.append(message)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.connection.close_code
            self.close_reason = self.connection.close_reason
            self._closed.set()
            async with self._changed:
                self._changed.notify_all()
