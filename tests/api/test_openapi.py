"""The OpenAPI document tells the truth: schemathesis fuzzes every documented operation of a
real ``roost serve`` and checks that no request makes a 5xx and that every response has a
documented status, content type, headers and body schema.

The caller is an admin who signed in over HTTP (so collection endpoints get past auth).
Record operations are pointed at a seeded collection ``posts`` whose rules are open, and
most calls that take a record id get one of a record made just before, so the fuzzed
bodies, headers and query strings reach the real record code instead of stopping at 404.
Operations on the signed-in account (``/api/auth/...``) run as a fresh user each time (a
guest for ``upgrade``), and most get a real refresh token, session id, user id or current
password, so that signing out or deleting the account never touches the admin.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conftest import LiveServer, free_port
from guarantees.live import sign_in
from roost.http.openapi import build_spec
from roost.http.routes import ROUTES

pytestmark = pytest.mark.slow

ADMIN_EMAIL = "fuzz@example.com"
PASSWORD = "a-long-enough-password"
MAX_EXAMPLES = 60
POSTS = {
    "name": "posts",
    "fields": {
        "title": {"type": "string", "max_length": 200},
        "score": {"type": "integer", "min": 0, "max": 1000},
    },
    "indexes": [{"fields": ["score"]}, {"fields": ["slug"], "unique": True}],
    "rules": {"list": "", "view": "", "create": "", "update": "", "delete": ""},
}
SCRATCH = {"name": "scratch"}  # a collection the fuzzer may change or drop


class FuzzedServer(LiveServer):
    """A live server with cheap password hashing and sign-in limits the fuzzer stays under
    (a 429 is still documented, but would hide the endpoints behind it)."""

    def _env(self) -> dict[str, str]:
        return {
            **super()._env(),
            "ROOST_PASSWORD_TIME_COST": "1",
            "ROOST_PASSWORD_MEMORY_KIB": "64",
            "ROOST_AUTH_RATE_LIMIT_IP": "100000/minute",
            "ROOST_AUTH_RATE_LIMIT_ACCOUNT": "100000/minute",
        }


class Target:
    """The live server, its admin token, and ways to make records and users for cases."""

    def __init__(self, server: LiveServer, http: httpx.Client) -> None:
        self.server = server
        self.http = http
        self.token = str(http.headers["Authorization"]).removeprefix("Bearer ")
        self.users = 0

    def new_user(self, guest: bool = False) -> dict[str, Any]:
        """A new account, signed in: ``/api/auth/anonymous`` or ``/api/auth/signup``."""
        self.users += 1
        if guest:
            response = self.http.post("/api/auth/anonymous", json={})
        else:
            body = {"email": f"user{self.users}@example.com", "password": PASSWORD}
            response = self.http.post("/api/auth/signup", json=body)
        assert response.status_code == 201, response.text
        signed_in: dict[str, Any] = response.json()
        return signed_in

    def session_id(self, token: str) -> str:
        response = self.http.get("/api/auth/sessions", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        session: str = response.json()["items"][0]["id"]
        return session

    def ensure_collection(self, definition: dict[str, Any]) -> None:
        response = self.http.post("/api/collections", json=definition)
        assert response.status_code in (201, 409), response.text

    def new_record(self) -> str:
        response = self.http.post("/api/collections/posts/records", json={"title": "seed"})
        assert response.status_code == 201, response.text
        record_id: str = response.json()["id"]
        return record_id


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    live_server = FuzzedServer(data_dir=data_dir, port=free_port())
    live_server.start()
    try:
        live_server.roost("admin", "create", ADMIN_EMAIL, stdin=PASSWORD + "\n")
        token = sign_in(live_server.url, ADMIN_EMAIL, PASSWORD)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=live_server.url, headers=auth, timeout=30) as http:
            found = Target(live_server, http)
            found.ensure_collection(POSTS)
            found.ensure_collection(SCRATCH)
            yield found
    finally:
        live_server.kill(signal.SIGTERM)


# The document as the code builds it (``test_served_document_is_the_built_one`` checks that
# the server serves exactly this). Loaded eagerly: schemathesis' fixture-based loader
# (``schemathesis.pytest.from_fixture``) breaks on pytest 9 (it sets ``Function._nodeid``).
#
# A stale If-Match is a 412 whatever else the request holds: preconditions are evaluated
# before the content is processed (RFC 9110 §13.2.1), so 412 is a right answer to both
# schema-valid and schema-violating requests. Likewise 422: the fuzzer reuses an
# Idempotency-Key for another request, and the key is checked before anything else.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": [
                    *("2xx", "3xx", "401", "403", "404", "409", "412", "422", "429")
                ]
            },
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "412", "413", "415"),
                    *("422", "428", "429"),
                ]
            },
        }
    }
)
# An event stream never ends, so it cannot be fuzzed request by request;
# tests/realtime/test_realtime.py covers it.
schema = schemathesis.openapi.from_dict(build_spec(), config=CONFIG).exclude(
    path="/api/realtime/sse"
)

# Operations whose input has meaning the document cannot state: a collection's own field
# schema (record bodies), the expression language (filters, sorts, rules), cursors signed
# by the server. A schema-valid request to them may rightly be a 400, so "schema-valid
# requests are accepted" is not checked there; every other check is.
SEMANTIC_INPUT = {
    ("POST", "/api/collections"),
    ("PATCH", "/api/collections/{name}"),
    ("GET", "/api/collections/{name}/records"),
    ("POST", "/api/collections/{name}/records"),
    ("PATCH", "/api/collections/{name}/records/{id}"),
    ("POST", "/api/batch"),
    ("GET", "/api/users"),
    ("GET", "/api/sync"),  # collection names and cursors the server gave
    # profile data: checked against the users collection's own field schema
    ("POST", "/api/auth/signup"),
    ("PATCH", "/api/auth/me"),
}
ACCOUNT_OPERATIONS = {
    "/api/auth/upgrade",
    "/api/auth/logout",
    "/api/auth/sessions",
    "/api/auth/sessions/{id}",
    "/api/auth/me",
    "/api/auth/password/change",
    "/api/auth/verify/request",
}
"""Operations on the signed-in account: each case runs as a new user."""


def _sometimes(data: st.DataObject, label: str) -> bool:
    """True about four times in five (Hypothesis favours 0, so 0 means yes)."""
    return data.draw(st.integers(0, 4), label=label) < 4


def _negative(case: Case, location: ParameterLocation) -> bool:
    """Whether schemathesis made this part of the request invalid on purpose."""
    component = case.meta.components.get(location) if case.meta is not None else None
    return component is not None and component.mode.is_negative


def _aim(case: Case, target: Target, data: st.DataObject) -> str:
    """Point most cases at the seeded collections, at records that exist and at fresh
    accounts; return the access token the case is sent with.

    Parts made invalid on purpose are left alone: aiming could make them valid again.
    """
    token = target.token
    path = case.operation.path
    params = case.path_parameters or {}
    body = case.body if isinstance(case.body, dict) else None
    if _negative(case, ParameterLocation.BODY):
        body = None
    if path in ACCOUNT_OPERATIONS:
        user = target.new_user(guest=path == "/api/auth/upgrade" and _sometimes(data, "guest"))
        token = user["access_token"]
        if path == "/api/auth/password/change" and body is not None:
            if _sometimes(data, "current password"):
                body["current_password"] = PASSWORD
        if "id" in params and not _negative(case, ParameterLocation.PATH):
            if _sometimes(data, "own session"):
                params["id"] = target.session_id(token)
        return token
    if path == "/api/auth/refresh" and body is not None and _sometimes(data, "live token"):
        body["refresh_token"] = target.new_user()["refresh_token"]
    elif path == "/api/auth/login" and body is not None and _sometimes(data, "account"):
        body["email"] = target.new_user()["user"]["email"]
        body["password"] = PASSWORD
    if _negative(case, ParameterLocation.PATH):
        return token
    if path == "/api/users/{id}" and _sometimes(data, "existing user"):
        params["id"] = target.new_user()["user"]["id"]
    elif path.startswith("/api/collections/{name}/records"):
        if _sometimes(data, "posts"):
            params["name"] = "posts"
            if "id" in params and _sometimes(data, "existing id"):
                params["id"] = target.new_record()
    elif path == "/api/collections/{name}":
        if _sometimes(data, "scratch"):
            target.ensure_collection(SCRATCH)
            params["name"] = "scratch"
    elif path == "/api/batch" and body is not None:
        operations = body.get("operations")
        for operation in operations if isinstance(operations, list) else []:
            if not isinstance(operation, dict) or not _sometimes(data, "aim"):
                continue
            operation["collection"] = "posts"
            if operation.get("action") in ("update", "delete"):
                operation["id"] = target.new_record()
    return token


@schema.given(data=st.data())
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_responses_match_the_spec(case: Case, data: st.DataObject, target: Target) -> None:
    token = _aim(case, target, data)
    operation = (case.operation.method.upper(), case.operation.path)
    case.call_and_validate(
        base_url=target.server.url,
        headers={"Authorization": f"Bearer {token}"},
        excluded_checks=[positive_data_acceptance] if operation in SEMANTIC_INPUT else [],
    )


def test_served_document_is_the_built_one(target: Target) -> None:
    response = target.http.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json() == build_spec()


def test_every_route_is_documented() -> None:
    documented = {
        (method.upper(), path)
        for path, operations in build_spec()["paths"].items()
        for method in operations
    }
    routed = {(method, route.path) for route in ROUTES for method in route.methods or ()}
    assert routed - {(m, p) for m, p in routed if m == "HEAD"} == documented
