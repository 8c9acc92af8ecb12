"""Time-ordered record ids (UUIDv7, RFC 9562) as lowercase text."""

from __future__ import annotations

import os
import re
import threading
import time

_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_lock = threading.Lock()
_last = (0, 0)  # (unix ms, 12-bit counter) of the last id made in this process


def new_id() -> str:
    """A new UUIDv7; ids made by one process are strictly increasing."""
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, counter = _last
        if ms <= last_ms:
            ms, counter = last_ms, counter + 1
            if counter > 0xFFF:
                ms, counter = last_ms + 1, 0
        else:
            counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last = (ms, counter)
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def is_uuid7(text: str) -> bool:
    """True for a lowercase or uppercase UUIDv7 in canonical 8-4-4-4-12 form."""
    return bool(_UUID7.match(text.lower())) if len(text) == 36 else False
