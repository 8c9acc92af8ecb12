"""The OpenAPI document tells the truth: schemathesis fuzzes every documented operation of a
real ``roost serve`` and checks that no request makes a 5xx and that every response has a
documented status, content type, headers and body schema.

The caller is an admin (so collection endpoints get past auth). Record operations are
pointed at a seeded collection ``posts`` whose rules are open, and most calls that take a
record id get one of a record made just before, so the fuzzed bodies, headers and query
strings reach the real record code instead of stopping at 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from roost.http.openapi import build_spec

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = pytest.mark.slow

ADMIN_EMAIL = "fuzz@example.com"
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


class Target:
    """The live server, its admin token, and a way to make records for cases to hit."""

    def __init__(self, server: LiveServer, http: httpx.Client) -> None:
        self.server = server
        self.http = http

    def ensure_collection(self, definition: dict[str, Any]) -> None:
        response = self.http.post("/api/collections", json=definition)
        assert response.status_code in (201, 409), response.text

    def new_record(self) -> str:
        response = self.http.post("/api/collections/posts/records", json={"title": "seed"})
        assert response.status_code == 201, response.text
        record_id: str = response.json()["id"]
        return record_id


@pytest.fixture(scope="module")
def target(module_live_server: LiveServer) -> Iterator[Target]:
    live_server = module_live_server
    live_server.roost("admin", "create", ADMIN_EMAIL, stdin="a-long-enough-password\n")
    token = live_server.roost("admin", "token", ADMIN_EMAIL).strip()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live_server.url, headers=auth, timeout=30) as http:
        found = Target(live_server, http)
        found.ensure_collection(POSTS)
        found.ensure_collection(SCRATCH)
        yield found


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
schema = schemathesis.openapi.from_dict(build_spec(), config=CONFIG)

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
}


def _sometimes(data: st.DataObject, label: str) -> bool:
    """True about four times in five (Hypothesis favours 0, so 0 means yes)."""
    return data.draw(st.integers(0, 4), label=label) < 4


def _negative(case: Case, location: ParameterLocation) -> bool:
    """Whether schemathesis made this part of the request invalid on purpose."""
    component = case.meta.components.get(location) if case.meta is not None else None
    return component is not None and component.mode.is_negative


def _aim(case: Case, target: Target, data: st.DataObject) -> None:
    """Point most cases at the seeded collections and at records that exist.

    Parts made invalid on purpose are left alone: aiming could make them valid again.
    """
    path = case.operation.path
    params = case.path_parameters or {}
    if _negative(case, ParameterLocation.PATH):
        return
    if path.startswith("/api/collections/{name}/records"):
        if _sometimes(data, "posts"):
            params["name"] = "posts"
            if "id" in params and _sometimes(data, "existing id"):
                params["id"] = target.new_record()
    elif path == "/api/collections/{name}":
        if _sometimes(data, "scratch"):
            target.ensure_collection(SCRATCH)
            params["name"] = "scratch"
    elif (
        path == "/api/batch"
        and isinstance(case.body, dict)
        and not _negative(case, ParameterLocation.BODY)
    ):
        operations = case.body.get("operations")
        for operation in operations if isinstance(operations, list) else []:
            if not isinstance(operation, dict) or not _sometimes(data, "aim"):
                continue
            operation["collection"] = "posts"
            if operation.get("action") in ("update", "delete"):
                operation["id"] = target.new_record()


@schema.given(data=st.data())
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_responses_match_the_spec(case: Case, data: st.DataObject, target: Target) -> None:
    _aim(case, target, data)
    operation = (case.operation.method.upper(), case.operation.path)
    case.call_and_validate(
        base_url=target.server.url,
        headers={"Authorization": target.http.headers["Authorization"]},
        excluded_checks=[positive_data_acceptance] if operation in SEMANTIC_INPUT else [],
    )


def test_served_document_is_the_built_one(target: Target) -> None:
    response = target.http.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json() == build_spec()
