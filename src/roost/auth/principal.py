"""Who is asking: the ``@auth`` of rules and the scope of idempotency keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "user"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller, or ``ANONYMOUS`` (no id, no role)."""

    id: str | None
    role: Role | None = None
    verified: bool = False
    session_id: str | None = None
    anonymous: bool = False
    """A guest account (``/api/auth/anonymous``): a user with an id but no email yet."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def scope(self) -> str:
        """A stable name for this caller, used to keep callers' idempotency keys apart."""
        return f"user:{self.id}" if self.id else "anonymous"


ANONYMOUS = Principal(id=None)
SYSTEM = Principal(id=None, role="admin", verified=True)
"""The server acting for itself (auth flows writing user records): passes every rule."""
