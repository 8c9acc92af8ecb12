"""The OpenAPI 3.1 description of the HTTP API, served at ``/api/openapi.json``."""

from __future__ import annotations

from roost import __version__
from roost.http.openapi_auth import auth_paths, user_paths
from roost.http.openapi_schemas import (
    ETAG,
    IDEMPOTENCY,
    IF_MATCH,
    LIST_PARAMETERS,
    NAME,
    RECORD_ID,
    SCHEMAS,
    STRING,
    Schema,
    ok,
    operation,
    param,
    ref,
)


def build_spec() -> Schema:
    status_schema = {"type": "object", "properties": {"status": STRING}}
    paths: dict[str, Schema] = {
        "/api/health": {"get": operation("Liveness", {"200": ok("Up", status_schema)}, errors=())},
        "/api/ready": {
            "get": operation("Readiness", {"200": ok("Ready", status_schema)}, errors=("503",))
        },
        "/api/openapi.json": {
            "get": operation("This document", {"200": ok("OpenAPI", {"type": "object"})}, errors=())
        },
        "/api/collections": {
            "get": operation(
                "List collections",
                {
                    "200": ok(
                        "Collections",
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": ref("Collection")}},
                        },
                    )
                },
            ),
            "post": operation(
                "Create a collection",
                {"201": ok("Created", ref("Collection"))},
                body=ref("CollectionInput"),
            ),
        },
        "/api/collections/{name}": {
            "get": operation(
                "Get a collection", {"200": ok("Found", ref("Collection"))}, parameters=[NAME]
            ),
            "patch": operation(
                "Change a collection (each top-level section given replaces the stored one)",
                {"200": ok("Changed", ref("Collection"))},
                body=ref("CollectionPatch"),
                parameters=[NAME],
            ),
            "delete": operation(
                "Drop a collection and its records", {"204": ok("Dropped")}, parameters=[NAME]
            ),
        },
        "/api/collections/{name}/records": {
            "get": operation(
                "List records", {"200": ok("A page", ref("Page"))}, parameters=LIST_PARAMETERS
            ),
            "post": operation(
                "Create a record",
                {"201": ok("Created", ref("Record"), ETAG)},
                body=ref("RecordCreate"),
                parameters=[NAME, IDEMPOTENCY],
            ),
        },
        "/api/collections/{name}/records/{id}": {
            "get": operation(
                "Get a record",
                {"200": ok("Found", ref("Record"), ETAG), "304": ok("Not modified")},
                parameters=[NAME, RECORD_ID, param("If-None-Match", "header", STRING)],
            ),
            "patch": operation(
                "Merge-patch a record (RFC 7396)",
                {"200": ok("Changed", ref("Record"), ETAG)},
                body=ref("RecordPatch"),
                parameters=[NAME, RECORD_ID, IF_MATCH, IDEMPOTENCY],
            ),
            "delete": operation(
                "Delete a record",
                {"204": ok("Deleted")},
                parameters=[NAME, RECORD_ID, IF_MATCH, IDEMPOTENCY],
            ),
        },
        "/api/batch": {
            "post": operation(
                "Several writes in one atomic transaction",
                {"200": ok("Every result, in order", ref("BatchResult"))},
                body=ref("BatchRequest"),
                parameters=[IDEMPOTENCY],
            )
        },
    }
    paths.update(user_paths())
    paths.update(auth_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Roost", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
