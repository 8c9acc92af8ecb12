"""The realtime ceiling: a bare ASGI WebSocket app on Granian with the settings ``roost
serve`` uses (one worker, uvloop, no access log), speaking just enough of Roost's
protocol for ``clients.py``: ``auth`` and ``subscribe`` are acknowledged at once (and
``synced``), pings from the client are ignored. ``POST /api/collections/<any>/records``
sends one event frame, of the size Roost's are, to every connection (each connection's
own task writes it from a queue, as Roost's sessions do) and answers ``{"id": ...}``.

What it measures is Granian's cost: memory per WebSocket connection, handshakes per
second, frames per second to N clients; Roost's figures are divided by these.

Usage: python bare.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

from granian import Granian
from granian.constants import Interfaces, Loops, RuntimeModes
from granian.log import LogLevels

HOST = "127.0.0.1"
QUEUE = 1000  # as ROOST_REALTIME_SEND_QUEUE
RECORD = {
    "owner": "01a22563-f0b7-708b-a0c3-aad231b3963b",
    "created": "2026-11-29T03:40:38.924Z",
    "updated": "2026-11-29T03:40:38.924Z",
    "version": 1,
}
queues: set[asyncio.Queue[str]] = set()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "websocket":
        await websocket(receive, send)


async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer: dict[str, Any] = {"ok": True}
    if scope["method"] == "POST":
        record = {**RECORD, **json.loads(body or b"{}"), "id": str(uuid.uuid4())}
        event = {"type": "event", "sub": "s2", "op": "create", "collection": "news"}
        frame = json.dumps({**event, "id": record["id"], "version": 1, "record": record})
        for queue in list(queues):
            if queue.qsize() < QUEUE:
                queue.put_nowait(frame)
        answer = record
    status = 201 if scope["method"] == "POST" else 200
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


async def websocket(receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def write() -> None:
        while True:
            await send({"type": "websocket.send", "text": await queue.get()})

    writer = asyncio.create_task(write())
    queues.add(queue)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            kind = json.loads(message.get("text") or "{}").get("type")
            if kind == "auth":
                queue.put_nowait('{"type":"ack","of":"auth"}')
            elif kind == "subscribe":
                queue.put_nowait('{"type":"ack","of":"subscribe"}')
                queue.put_nowait('{"type":"synced"}')
    finally:
        queues.discard(queue)
        writer.cancel()


def main() -> None:
    Granian(
        "bare:app",
        address=HOST,
        port=int(sys.argv[1]),
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        runtime_mode=RuntimeModes.st,  # as roost serve runs it
        log_level=LogLevels.warning,
        log_access=False,
        workers_kill_timeout=10,
    ).serve()


if __name__ == "__main__":
    main()
