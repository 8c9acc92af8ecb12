"""The OpenAPI 3.1 description of the HTTP API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from roost import __version__
from roost.query.limits import MAX_LIMIT

Schema = dict[str, Any]

ERROR_STATUSES = {
    "400": "Bad input (invalid_json, validation_failed, invalid_filter, invalid_cursor, ...)",
    "401": "Missing or invalid credentials",
    "403": "The caller may not do this",
    "404": "No such collection, record or endpoint",
    "405": "Method not allowed",
    "409": "Conflict with existing data",
    "412": "If-Match names a stale version",
    "413": "Body too large",
    "415": "Body is not JSON",
    "422": "Idempotency-Key reused with a different request",
    "503": "A backend is unavailable",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def operation(
    summary: str,
    responses: dict[str, Schema],
    *,
    body: Schema | None = None,
    parameters: list[Schema] | None = None,
    errors: tuple[str, ...] = tuple(ERROR_STATUSES),
) -> Schema:
    result: Schema = {"summary": summary, "responses": dict(responses)}
    for status in errors:
        result["responses"].setdefault(
            status,
            {
                "description": ERROR_STATUSES[status],
                "content": {"application/problem+json": {"schema": ref("Problem")}},
            },
        )
    if body is not None:
        result["requestBody"] = {"required": True, "content": json_content(body)}
    if parameters:
        result["parameters"] = parameters
    return result


def ok(description: str, schema: Schema | None = None, headers: Schema | None = None) -> Schema:
    response: Schema = {"description": description}
    if schema is not None:
        response["content"] = json_content(schema)
    if headers:
        response["headers"] = headers
    return response


def param(name: str, where: str, schema: Schema, description: str = "") -> Schema:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


STRING = {"type": "string"}
NAME = param("name", "path", {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"})
RECORD_ID = param("id", "path", {"type": "string", "format": "uuid"})
IDEMPOTENCY = param("Idempotency-Key", "header", {"type": "string", "maxLength": 255})
IF_MATCH = param("If-Match", "header", STRING, 'Version the write expects, e.g. "3"')
ETAG = {"ETag": {"schema": STRING, "description": "The record version"}}

SCHEMAS: dict[str, Schema] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": STRING,
            "title": STRING,
            "status": {"type": "integer"},
            "detail": STRING,
            "code": STRING,
            "errors": {"type": "array", "items": {"type": "object"}},
            "position": {"type": "integer"},
            "operation": {"type": "integer"},
            "current": ref("Record"),
        },
    },
    "Record": {
        "type": "object",
        "required": ["id", "owner", "created", "updated", "version"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "owner": {"type": ["string", "null"]},
            "created": {"type": "string", "format": "date-time"},
            "updated": {"type": "string", "format": "date-time"},
            "version": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": True,
    },
    "RecordData": {
        "type": "object",
        "description": "Client fields; on create, `id` may carry a client-made UUIDv7.",
        "additionalProperties": True,
    },
    "Page": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": ref("Record")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "Field": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {
                "enum": ["string", "number", "integer", "boolean", "object", "array", "datetime"]
            },
            "required": {"type": "boolean"},
            "default": {},
            "max_length": {"type": ["integer", "null"], "minimum": 0},
            "min": {"type": ["number", "null"]},
            "max": {"type": ["number", "null"]},
        },
        "additionalProperties": False,
    },
    "CollectionInput": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
            "fields": {"type": "object", "additionalProperties": ref("Field")},
            "indexes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["fields"],
                    "properties": {
                        "fields": {"type": "array", "items": STRING, "minItems": 1},
                        "unique": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
            },
            "rules": {
                "type": "object",
                "properties": {
                    action: {"type": ["string", "null"]}
                    for action in ("list", "view", "create", "update", "delete")
                },
                "additionalProperties": False,
            },
            "options": {
                "type": "object",
                "properties": {"strict": {"type": "boolean"}},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    "Collection": {
        "allOf": [
            ref("CollectionInput"),
            {
                "type": "object",
                "required": ["created", "updated", "version"],
                "properties": {
                    "created": STRING,
                    "updated": STRING,
                    "version": {"type": "integer"},
                },
            },
        ]
    },
    "BatchRequest": {
        "type": "object",
        "required": ["operations"],
        "properties": {
            "operations": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": {
                    "type": "object",
                    "required": ["action", "collection"],
                    "properties": {
                        "action": {"enum": ["create", "update", "delete"]},
                        "collection": STRING,
                        "id": STRING,
                        "data": {"type": "object"},
                        "if_match": {"type": "integer", "minimum": 1},
                    },
                    "additionalProperties": False,
                },
            }
        },
        "additionalProperties": False,
    },
    "BatchResult": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status", "record"],
                    "properties": {
                        "status": {"type": "integer"},
                        "record": {"oneOf": [ref("Record"), {"type": "null"}]},
                    },
                },
            }
        },
    },
}

LIST_PARAMETERS = [
    NAME,
    param("filter", "query", {"type": "string", "maxLength": 4096}, "Filter expression"),
    param("sort", "query", STRING, "Comma-separated fields, '-' for descending"),
    param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    param("cursor", "query", STRING, "next_cursor of the previous page"),
    param("fields", "query", STRING, "Comma-separated fields to return"),
]


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
                body={"type": "object"},
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
                body=ref("RecordData"),
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
                body=ref("RecordData"),
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
