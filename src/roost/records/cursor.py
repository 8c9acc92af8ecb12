"""Opaque, signed page cursors for keyset pagination.

A cursor holds the sort values of the last row of a page and a fingerprint of the
collection and sort it was made for. It is signed with the server's secret key, so a
cursor that was altered, cut short or made for another query is refused with 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from roost.errors import InvalidCursor

MAX_CURSOR_LENGTH = 4096
_SIGNATURE_BYTES = 16


class PageCursors:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"roost page cursor\0" + secret).digest()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def encode(self, scope: str, values: list[Any]) -> str:
        payload = orjson.dumps([scope, values])
        token = self._sign(payload) + payload
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def decode(self, scope: str, cursor: str) -> list[Any]:
        """The sort values in ``cursor``; InvalidCursor if it was not made for ``scope``."""
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise InvalidCursor("the cursor is too long")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise InvalidCursor("the cursor is not one this server made") from None
        signature, payload = raw[:_SIGNATURE_BYTES], raw[_SIGNATURE_BYTES:]
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidCursor("the cursor is not one this server made")
        made_for, values = orjson.loads(payload)
        if made_for != scope:
            raise InvalidCursor("the cursor belongs to another collection or sort order")
        return list(values)
