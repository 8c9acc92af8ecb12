"""Fixtures of the API scenario tables: ``api`` (anonymous client + admin token) and
``posts`` (``api`` with a ``posts`` collection holding three records)."""

from __future__ import annotations

import httpx
import pytest

from api.scenario import POSTS, Api
from roost.components import Components


@pytest.fixture
async def api(admin: httpx.AsyncClient, components: Components) -> Api:
    """The ``admin`` client made anonymous again; rows add the token when they need it."""
    token = admin.headers.pop("Authorization").removeprefix("Bearer ")
    return Api(client=admin, token=token, components=components)


@pytest.fixture
async def posts(api: Api) -> Api:
    """``api`` with the ``posts`` collection and records ``{a}``, ``{b}``, ``{c}``."""
    await api.create_collection(POSTS)
    for key, title, score in (("a", "alpha", 1), ("b", "beta", 2), ("c", "gamma", 3)):
        record = await api.create_record("posts", {"title": title, "score": score})
        api.values[key] = record["id"]
    return api
