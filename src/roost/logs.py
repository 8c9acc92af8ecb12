"""Structured logs: one JSON object per line on stderr, with the request id bound and
fields named like secrets redacted (docs/reference/logs-and-traces.md)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being served, set by the HTTP middleware."""


def add_request_id(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


@dataclass(slots=True)
class Caller:
    """Who the request being served turned out to be, for its access line."""

    user_id: str | None = None


CALLER: ContextVar[Caller | None] = ContextVar("roost_caller", default=None)
"""Set by the HTTP middleware for each request or WebSocket it logs; filled by
``note_caller`` where an access token is verified (tasks the request starts share it)."""


def note_caller(user_id: str | None) -> None:
    """Record the authenticated user of the request being served (None: anonymous)."""
    caller = CALLER.get()
    if caller is not None:
        caller.user_id = user_id


REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"password|passwd|token|secret|authori[sz]ation|cookie|api_?key", re.I)


@lru_cache(maxsize=1024)
def _secret(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of every field named like a secret (``password``, ``token``,
    ``secret``, ``authorization``, ``cookie``, ``api_key``), in nested objects too: a
    defence in depth, since no log call should pass a credential in the first place."""
    for key, value in event.items():
        if _secret(key):
            event[key] = REDACTED
        elif isinstance(value, dict | list):
            event[key] = _redacted(value)
    return event


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _secret(k) else _redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


PROCESSORS: list[structlog.typing.Processor] = [
    add_request_id,
    redact,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    structlog.processors.JSONRenderer(serializer=orjson.dumps, option=orjson.OPT_NON_STR_KEYS),
]
"""From a log call to its JSON line, as bytes (orjson: the access line is written for every
request, and the standard library's encoder and text stream took 18 µs a line to 11)."""


def configure_logging(level: str) -> None:
    structlog.configure(
        processors=PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
