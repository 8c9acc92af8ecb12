"""Wake-ups between instances through Redis pub/sub: ``redis://host:port/db`` or ``rediss://``.

Every instance subscribes to one channel, ``roost:changes``, and publishes an empty
message to it after commits. Pub/sub ignores the URL's database number, so deployments
sharing one Redis name their own channel with a ``channel`` query parameter, which is
taken off the URL before it reaches redis-py::

    redis://redis.internal:6379/0?channel=roost:staging:changes

**Publishing** never waits: ``publish()`` sets a flag, and a publisher task sends one
PUBLISH per wake-up, for every ``publish()`` made since the last one was sent (at most one
is in flight, so a burst of commits costs one or two messages). A PUBLISH that fails or
times out is dropped, and logged once per outage: feeds also read the change log on a
timer, so a lost message costs latency, never an event.

**Listening**: a listener task subscribes and calls every ``wake()`` for each message, its
own instance's included. A server that goes away closes the connection and is noticed at
once; one that hangs is noticed when it has answered neither a message nor a PING for
``DEAD_AFTER`` seconds. The broker is then unhealthy and resubscribes with a backoff from
``MIN_RETRY_DELAY`` doubling to ``MAX_RETRY_DELAY``; once subscribed again it is healthy and
calls every ``wake()`` once, since messages may have been lost meanwhile. ``open()`` never
waits for Redis: the broker stays unhealthy until the first subscription succeeds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from roost.backends import MissingDependency
from roost.broker.base import Broker, Wake

try:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise MissingDependency("redis", extra="redis") from error

CHANNEL = "roost:changes"
"""The pub/sub channel, unless the URL names another with ``?channel=``."""
DEFAULT_TIMEOUT = 0.5
"""Seconds one call may take (connecting, subscribing, publishing) before it fails."""
PING_INTERVAL = 0.5
"""Seconds of silence on the subscription after which the listener sends a PING."""
DEAD_AFTER = 1.5
"""Seconds without a message or a PING's answer after which the subscription is dropped."""
MIN_RETRY_DELAY = 0.1
"""Seconds before the first attempt to subscribe again; doubles after each failure."""
MAX_RETRY_DELAY = 2.0
"""The longest wait between attempts to subscribe."""

FAILURES = (RedisError, OSError, TimeoutError)

log = structlog.get_logger("roost.broker")


class RedisBroker(Broker):
    """Redis pub/sub between instances; unhealthy (and retrying) while Redis is away."""

    shared = True

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        redis_url, self.channel = split_channel(url)
        self._timeout = timeout
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # the listener retries, with its own backoff
        )
        self._listeners: list[Wake] = []
        self._pending = asyncio.Event()
        """Set by ``publish()``, cleared by the publisher when it sends."""
        self._healthy = False
        self._listener_failing = False
        self._publisher_failing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        """Ends the loops even when redis-py swallows their cancellation (a read's own
        timeout expiring as the cancel arrives turns it into "no message yet")."""

    async def open(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="roost.broker.listener"),
            asyncio.create_task(self._publish_forever(), name="roost.broker.publisher"),
        ]

    def publish(self) -> None:
        self._pending.set()

    def listen(self, wake: Wake) -> None:
        self._listeners.append(wake)

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def aclose(self) -> None:
        self._closing = True
        self._pending.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._healthy = False
        self._listeners.clear()
        await self._client.aclose()

    # The publisher.

    async def _publish_forever(self) -> None:
        while True:
            await self._pending.wait()
            if self._closing:
                return
            self._pending.clear()  # publish() calls from now on need another message
            try:
                try:
                    async with asyncio.timeout(self._timeout):
                        await self._client.publish(self.channel, b"")
                except FAILURES:  # once more, on a new connection: a pooled one may be
                    async with asyncio.timeout(self._timeout):  # stale after an outage
                        await self._client.publish(self.channel, b"")
            except FAILURES as error:
                if not self._publisher_failing:
                    self._publisher_failing = True
                    log.warning("broker_publish_failed", **_describe(error))
            else:
                if self._publisher_failing:
                    self._publisher_failing = False
                    log.info("broker_publish_recovered")

    # The listener.

    async def _listen_forever(self) -> None:
        delay = MIN_RETRY_DELAY
        while not self._closing:
            pubsub = self._client.pubsub()
            try:
                await self._subscribe(pubsub)
                delay = MIN_RETRY_DELAY
                self._subscribed()
                await self._relay(pubsub)
            except FAILURES as error:
                self._unsubscribed(error)
            except Exception:  # a listener must never die silently
                self._healthy = False
                log.exception("broker_listener_failed")
            finally:
                await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    async def _subscribe(self, pubsub: PubSub) -> None:
        async with asyncio.timeout(self._timeout):
            await pubsub.subscribe(self.channel)
            reply = await pubsub.get_message(timeout=None)
        if reply is None or reply["type"] != "subscribe":
            raise RedisError(f"unexpected reply to SUBSCRIBE: {reply!r}")

    async def _relay(self, pubsub: PubSub) -> None:
        """Wake the listeners for each message until the subscription fails (raises) or
        the broker closes."""
        heard = time.monotonic()
        while not self._closing:
            message = await pubsub.get_message(timeout=PING_INTERVAL)
            now = time.monotonic()
            if message is not None:
                heard = now  # a message or a PING's answer: the server is alive
                if message["type"] == "message":
                    self._wake_all()
            elif now - heard >= DEAD_AFTER:
                raise TimeoutError(f"Redis answered nothing for {now - heard:.1f} s")
            else:
                async with asyncio.timeout(self._timeout):
                    await pubsub.ping()

    def _subscribed(self) -> None:
        self._healthy = True
        if self._listener_failing:
            self._listener_failing = False
            log.info("broker_redis_recovered", channel=self.channel)
        self._wake_all()  # messages may have been lost while not subscribed

    def _unsubscribed(self, error: BaseException) -> None:
        self._healthy = False
        if not self._listener_failing:
            self._listener_failing = True
            log.warning("broker_redis_unavailable", channel=self.channel, **_describe(error))

    def _wake_all(self) -> None:
        loop = asyncio.get_running_loop()
        for wake in self._listeners:
            loop.call_soon(wake)


def split_channel(url: str) -> tuple[str, str]:
    """``url`` without its ``channel`` query parameter, and the channel it names."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "channel"]
    channel = named[-1] if named else CHANNEL
    if not channel:
        raise ValueError("the broker URL's channel parameter is empty")
    rest = urlencode([(key, value) for key, value in query if key != "channel"])
    return urlunsplit(parts._replace(query=rest)), channel


def _describe(error: BaseException) -> dict[str, Any]:
    return {"error": type(error).__name__, "detail": str(error)}
