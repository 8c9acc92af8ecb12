"""The OpenAPI 3.1 description of the HTTP API, served at ``/api/openapi.json``."""

from __future__ import annotations

from roost import __version__
from roost.http.openapi_auth import auth_paths, user_paths
from roost.http.openapi_schemas import (
    CACHED,
    ETAG,
    IDEMPOTENCY,
    IF_MATCH,
    LIST_PARAMETERS,
    NAME,
    RECORD_ID,
    SCHEMAS,
    STRING,
    SYNC_ERRORS,
    SYNC_PARAMETERS,
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
        "/metrics": {
            "get": operation(
                "Prometheus metrics (for the metrics token, or an admin)",
                {
                    "200": {
                        "description": "The Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                errors=("401", "403"),
            )
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
                "List records",
                {"200": ok("A page", ref("Page"), CACHED), "304": ok("Not modified")},
                parameters=LIST_PARAMETERS,
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
                {"200": ok("Found", ref("Record"), CACHED), "304": ok("Not modified")},
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
        "/api/sync": {
            "get": operation(
                "Offline delta sync: what changed since a cursor",
                {"200": ok("A page of changes", ref("SyncPage"))},
                parameters=SYNC_PARAMETERS,
                errors=SYNC_ERRORS,
                description="Without `since`, every record the caller may read, as creates;"
                " then the change log: creates, updates, deletes, and enter/leave when a"
                " change moves a record into or out of what the caller may read. Follow"
                " `cursor` while `has_more`; keep the last one. A 410 `resync_required`"
                " means: drop the local copy and sync again without `since`.",
            )
        },
        "/api/realtime/sse": {
            "get": operation(
                "Live record events as Server-Sent Events",
                {
                    "200": {
                        "description": "An endless stream of events",
                        "content": {"text/event-stream": {"schema": STRING}},
                    }
                },
                parameters=[
                    {**param("collection", "query", STRING, "The collection"), "required": True},
                    param("filter", "query", STRING, "Only records matching this filter"),
                    param("since", "query", STRING, "Resume after this cursor"),
                    param("Last-Event-ID", "header", STRING, "Resume after this cursor"),
                ],
                errors=(*SYNC_ERRORS, "429"),
                description="One subscription, resumable with `Last-Event-ID` (or `since`):"
                " each event's `id` is its cursor and its `event` the op. The WebSocket"
                " protocol, at `/api/realtime`, is not an HTTP operation; both are described"
                " in docs/reference/realtime.md.",
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
