"""The log pipeline: JSON lines, the request id bound, secrets redacted at any depth."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog

from roost.logs import CALLER, PROCESSORS, REDACTED, REQUEST_ID, Caller, note_caller


def logged(**fields: Any) -> dict[str, Any]:
    """What the configured processors write for ``info("event", **fields)``, parsed."""
    out = io.BytesIO()
    structlog.wrap_logger(structlog.BytesLogger(out), processors=PROCESSORS).info("event", **fields)
    line: dict[str, Any] = json.loads(out.getvalue())
    return line


def test_fields_named_like_secrets_are_redacted_at_any_depth() -> None:
    line = logged(
        password="hunter2",
        access_token="at",
        Authorization="Bearer at",
        secret_key="sk",
        refreshToken="rt",
        cookie="c",
        api_key="k",
        nested={"new_password": "p", "items": [{"token": "t", "kept": 1}], "kept": "yes"},
        route="/api/auth/login",
        status=200,
    )
    for name in ("password", "access_token", "Authorization", "secret_key", "refreshToken"):
        assert line[name] == REDACTED
    assert line["cookie"] == line["api_key"] == REDACTED
    assert line["nested"] == {
        "new_password": REDACTED,
        "items": [{"token": REDACTED, "kept": 1}],
        "kept": "yes",
    }
    assert (line["route"], line["status"], line["event"]) == ("/api/auth/login", 200, "event")
    for secret in ("hunter2", "Bearer at", "sk", "rt", '"t"', '"p"'):
        assert secret not in json.dumps(line)


def test_a_line_carries_the_request_id_level_and_time() -> None:
    token = REQUEST_ID.set("req-1")
    try:
        line = logged(keys=3)
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "req-1"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert line["keys"] == 3  # a name merely near a secret word is kept


def test_the_caller_is_noted_only_while_a_request_is_logged() -> None:
    note_caller("nobody")  # outside a request: nowhere to note it, and no error
    caller = Caller()
    token = CALLER.set(caller)
    try:
        note_caller("user-1")
    finally:
        CALLER.reset(token)
    assert caller.user_id == "user-1"
