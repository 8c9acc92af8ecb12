"""Type aliases shared across Roost."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""A value decoded from JSON: None, bool, int, float, str, list or dict."""

JSONObject: TypeAlias = dict[str, Any]
