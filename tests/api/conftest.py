"""Fixtures of the API scenario tables: ``api`` (anonymous client + the tokens of an admin
and of an ordinary user) and ``posts`` (``api`` with a ``posts`` collection holding three
records the admin made)."""

from __future__ import annotations

import httpx
import pytest

from api.scenario import POSTS, Api
from conftest import ADMIN_PASSWORD, TEST_DEVICE
from roost.components import Components

USER_EMAIL = "user@example.com"


@pytest.fixture
async def api(admin: httpx.AsyncClient, components: Components) -> Api:
    """The ``admin`` client made anonymous again; rows add a token when they need one.

    ``{admin}`` and ``{user}`` are the user ids of the admin and of the ordinary user."""
    token = admin.headers.pop("Authorization").removeprefix("Bearer ")
    user = await components.accounts.signup(USER_EMAIL, ADMIN_PASSWORD, TEST_DEVICE, {})
    admin_id = components.tokens.verify(token).user_id
    return Api(
        client=admin,
        token=token,
        user_token=user.access_token,
        components=components,
        values={"admin": admin_id, "user": user.user["id"]},
    )


@pytest.fixture
async def posts(api: Api) -> Api:
    """``api`` with the ``posts`` collection and records ``{a}``, ``{b}``, ``{c}``."""
    await api.create_collection(POSTS)
    for key, title, score in (("a", "alpha", 1), ("b", "beta", 2), ("c", "gamma", 3)):
        record = await api.create_record("posts", {"title": title, "score": score})
        api.values[key] = record["id"]
    return api
