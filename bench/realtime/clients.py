#!/usr/bin/env python3
"""The subscribers: many WebSocket clients of one Roost in one asyncio process (uvloop).

Usage:  python clients.py PORT INDEX PROCESSES TOTAL ROOMS CONCURRENCY

This process holds subscribers INDEX, INDEX + PROCESSES, ... below TOTAL; subscriber i
signs in anonymously and subscribes to ``msgs`` with ``room = "r<i mod ROOMS>"``. It takes
one command per line on stdin and answers each with one JSON line on stdout:

    warm            one connection (auth, subscribe, synced), closed again
    connect         every subscriber connects (CONCURRENCY handshakes at a time), signs
                    in, subscribes and waits for ``synced``; then reads until the end
    subscribe NAME  a second subscription, to every record of collection NAME
    count           how many events have arrived so far
    dump PATH       every event's (subscriber, record id, receipt time_ns) to PATH
    close           close every connection and exit

Receipts are stamped with ``time.time_ns()`` as soon as the frame reaches the client's
coroutine, before it is parsed: the writer in the driver uses the same clock. Pings are
answered with pongs (the server closes clients silent for ROOST_REALTIME_IDLE_SECONDS);
every other message, and every close the client did not ask for, is counted.

The garbage collector is off from ``connect`` on (one collection, then ``gc.freeze``,
once connected): with 10,000 connections a full collection stalls every receipt for
100-300 ms, which would be counted as Roost's latency. What is allocated after is
short-lived or kept (receipts) for a run of minutes; the pauses seen (none, unless
something collects explicitly) and the process's RSS are reported.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections import Counter
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

COLLECTION = "msgs"
OPEN_TIMEOUT = 60.0
"""Seconds for one subscriber's handshake, auth and subscribe (the accept queue can be long)."""
PONG = '{"type":"pong"}'


def room_of(index: int, rooms: int) -> str:
    return f"r{index % rooms}"


class Pauses:
    """The garbage collector's pauses in this process since the subscribers connected (a
    long one delays every receipt)."""

    def __init__(self) -> None:
        self.started = 0
        self.longest_ms = 0.0
        self.total_ms = 0.0
        self.collections = 0
        gc.callbacks.append(self._track)

    def _track(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter_ns()
            return
        pause = (time.perf_counter_ns() - self.started) / 1e6
        self.collections += 1
        self.total_ms += pause
        self.longest_ms = max(self.longest_ms, pause)

    def reset(self) -> None:
        self.longest_ms = self.total_ms = 0.0
        self.collections = 0

    def summary(self) -> dict[str, float]:
        return {
            "collections": self.collections,
            "longest_ms": self.longest_ms,
            "total_ms": self.total_ms,
        }


class Subscribers:
    def __init__(self, port: int, indexes: list[int], rooms: int, concurrency: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/api/realtime"
        self.indexes = indexes
        self.rooms = rooms
        self.concurrency = concurrency
        self.sockets: dict[int, ClientConnection] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.receipts: list[tuple[int, str, int]] = []
        self.messages: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        """Failed connects and error messages, by kind (the first words of each)."""
        self.dropped: Counter[str] = Counter()
        """Closes the client did not ask for, by code and reason."""
        self.closing = False
        self.pauses = Pauses()

    async def _open(self, index: int, room: str) -> ClientConnection:
        """Connect, sign in anonymously and subscribe to ``room``; wait for ``synced``."""
        ws = await connect(
            self.url,
            compression=None,
            ping_interval=None,  # the server's own pings keep the connection alive
            open_timeout=OPEN_TIMEOUT,
            close_timeout=2,
            user_agent_header=None,
        )
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                await ws.send('{"type":"auth","token":null}')
                await self._expect(ws, "ack")
                message = {"type": "subscribe", "id": "s1", "collection": COLLECTION}
                await ws.send(json.dumps({**message, "filter": f'room = "{room}"'}))
                await self._expect(ws, "ack")
                await self._expect(ws, "synced")
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _expect(self, ws: ClientConnection, kind: str) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message.get("type") == kind:
                return message
            if message.get("type") == "ping":
                await ws.send(PONG)
                continue
            raise RuntimeError(f"expected {kind}, got {str(message)[:200]}")

    async def _read(self, index: int, ws: ClientConnection) -> None:
        receipts, messages = self.receipts, self.messages
        try:
            async for text in ws:
                now = time.time_ns()
                message = orjson.loads(text)
                kind = message.get("type")
                if kind == "event":
                    receipts.append((index, message["id"], now))
                elif kind == "ping":
                    messages["ping"] += 1
                    await ws.send(PONG)
                else:
                    messages[kind] += 1
                    if kind == "error":
                        self.errors[f"error message: {message.get('code')}"] += 1
        except ConnectionClosed:
            pass
        except Exception as exc:  # counted, never fatal to the other subscribers
            self.errors[f"reader: {type(exc).__name__}"] += 1
        if not self.closing:
            self.dropped[f"{ws.close_code} {ws.close_reason}"] += 1

    async def warm(self) -> dict[str, Any]:
        started = time.monotonic()
        ws = await self._open(-1, "warm")
        await ws.close()
        return {"warm_seconds": time.monotonic() - started}

    async def connect_all(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.concurrency)
        seconds: list[float] = []

        async def one(index: int) -> None:
            async with gate:
                started = time.monotonic()
                try:
                    ws = await self._open(index, room_of(index, self.rooms))
                except Exception as exc:
                    self.errors[f"connect: {type(exc).__name__}: {str(exc)[:80]}"] += 1
                    return
                seconds.append(time.monotonic() - started)
                self.sockets[index] = ws
                self.readers.append(asyncio.create_task(self._read(index, ws)))

        started = time.monotonic()
        gc.disable()  # no collection from here on: see the module's docstring
        await asyncio.gather(*(one(i) for i in self.indexes))
        gc.collect()
        gc.freeze()  # the connections, out of any collection's sight
        self.pauses.reset()
        return {
            "connected": sorted(self.sockets),
            "failed": len(self.indexes) - len(self.sockets),
            "seconds": time.monotonic() - started,
            "open_seconds": seconds,
            "errors": dict(self.errors),
        }

    async def subscribe_all(self, collection: str) -> dict[str, Any]:
        """A second subscription ``s2`` to every record of ``collection`` on each socket;
        the acks and ``synced`` arrive through the readers (counted in ``messages``)."""
        before = self.messages["synced"]
        started = time.monotonic()
        frame = json.dumps({"type": "subscribe", "id": "s2", "collection": collection})
        gate = asyncio.Semaphore(self.concurrency)

        async def one(ws: ClientConnection) -> None:
            async with gate:
                try:
                    await ws.send(frame)
                except ConnectionClosed:
                    pass

        await asyncio.gather(*(one(ws) for ws in self.sockets.values()))
        deadline = time.monotonic() + OPEN_TIMEOUT
        while self.messages["synced"] - before < len(self.sockets):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return {
            "subscribed": self.messages["synced"] - before,
            "seconds": time.monotonic() - started,
        }

    async def close_all(self) -> dict[str, Any]:
        self.closing = True
        gate = asyncio.Semaphore(self.concurrency)

        async def one(ws: ClientConnection) -> None:
            async with gate:
                await ws.close()

        await asyncio.gather(*(one(ws) for ws in self.sockets.values()), return_exceptions=True)
        await asyncio.gather(*self.readers, return_exceptions=True)
        return {"closed": len(self.sockets)}

    def summary(self) -> dict[str, Any]:
        return {
            "events": len(self.receipts),
            "messages": dict(self.messages),
            "errors": dict(self.errors),
            "dropped": dict(self.dropped),
            "gc": self.pauses.summary(),
        }


async def serve(subscribers: Subscribers) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode():
        command, _, argument = line.strip().partition(" ")
        answer: dict[str, Any]
        if command == "warm":
            answer = await subscribers.warm()
        elif command == "connect":
            answer = await subscribers.connect_all()
        elif command == "subscribe":
            answer = await subscribers.subscribe_all(argument)
        elif command == "count":
            answer = {"events": len(subscribers.receipts)}
        elif command == "dump":
            with open(argument, "wb") as out:
                out.write(orjson.dumps(subscribers.receipts))
            answer = subscribers.summary()
        elif command == "close":
            answer = await subscribers.close_all()
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)
        if command == "close":
            return


def main() -> None:
    port, index, processes, total, rooms, concurrency = (int(a) for a in sys.argv[1:7])
    indexes = list(range(index, total, processes))
    subscribers = Subscribers(port, indexes, rooms, concurrency)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(subscribers))
    else:
        uvloop.run(serve(subscribers))


if __name__ == "__main__":
    main()
