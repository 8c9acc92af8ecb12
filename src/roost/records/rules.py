"""Access rules per collection and action.

Until user accounts land, a rule is enforced coarsely: ``""`` lets anyone in and every
other rule (``None`` or an expression) admits admins only. Admins pass every rule.
"""

from __future__ import annotations

from typing import Literal

from roost.auth.principal import Principal
from roost.errors import Forbidden, Unauthorized
from roost.records.collections import Collection

Action = Literal["list", "view", "create", "update", "delete"]


def authorize(collection: Collection, action: Action, principal: Principal) -> None:
    """Raise unless ``principal`` may perform ``action`` on ``collection``."""
    if principal.is_admin:
        return
    rule = getattr(collection.definition.rules, action)
    if rule == "":
        return
    name = collection.definition.name
    if principal.id is None:
        raise Unauthorized(f"{action} on {name!r} needs an authenticated caller")
    raise Forbidden(f"{action} on {name!r} is not allowed for this caller")
