"""Every bound of the expression language, named once."""

from __future__ import annotations

MAX_FILTER_LENGTH = 4096
"""Maximum length of a filter, rule, sort or field-list text, in characters."""

MAX_DEPTH = 16
"""Maximum nesting of parentheses and ``!``."""

MAX_TERMS = 64
"""Maximum number of comparisons in one expression."""

MAX_LIST_ITEMS = 100
"""Maximum number of items in the list on the right of ``in``."""

MAX_PATH_SEGMENTS = 8
"""Maximum number of segments in a field path (``a.b.0.c`` has four)."""

MAX_NAME_LENGTH = 64
"""Maximum length of one named path segment (``[A-Za-z][A-Za-z0-9_]{0,63}``)."""

MAX_ARRAY_INDEX = 2**31 - 1
"""Largest array index accepted in a path segment."""

MAX_SAFE_INTEGER = 2**53 - 1
"""Integer literals must lie within ±MAX_SAFE_INTEGER (exact in every JSON client)."""

MAX_SORT_FIELDS = 8
"""Maximum number of fields in a sort spec (the ``id`` tie-breaker not counted)."""

MAX_PROJECTION_FIELDS = 64
"""Maximum number of paths in a ``fields=`` projection."""

DEFAULT_LIMIT = 50
"""Page size when the caller gives none."""

MAX_LIMIT = 500
"""Largest page size a caller may ask for."""
