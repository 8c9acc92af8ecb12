"""The OpenAPI 3.1 description of the HTTP API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from roost import __version__
from roost.query.limits import DEFAULT_LIMIT, MAX_LIMIT

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
COLLECTION_NAME = "^[a-z][a-z0-9_]{0,62}$"
UUID7 = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
FIELD_NAME = "^[A-Za-z][A-Za-z0-9_]{0,63}$"
SYSTEM_FIELDS = ["id", "owner", "created", "updated", "version"]
NAME = param("name", "path", {"type": "string", "pattern": COLLECTION_NAME})
RECORD_ID = param("id", "path", {"type": "string", "pattern": UUID7}, "A record id (UUIDv7)")
IDEMPOTENCY = param(
    "Idempotency-Key",
    "header",
    # 1-255 printable ASCII characters; HTTP drops leading and trailing spaces
    {"type": "string", "pattern": "^[!-~]([ -~]{0,253}[!-~])?$"},
    "A retry with the same key returns the first result and writes nothing twice",
)
IF_MATCH = param(
    "If-Match",
    "header",
    {"type": "string", "pattern": '^(W/)?"?[0-9]{1,18}"?$'},
    'Version the write expects, e.g. "3"',
)
ETAG = {"ETag": {"schema": STRING, "description": "The record version"}}
TIMESTAMP = {"type": "string", "format": "date-time"}


def client_fields(description: str, reserved: list[str]) -> Schema:
    """A JSON object of client fields whose top-level names avoid ``reserved``."""
    return {
        "type": "object",
        "description": description,
        "propertyNames": {"pattern": FIELD_NAME, "not": {"enum": reserved}},
        "additionalProperties": True,
    }


FIELD_NAMES = {"pattern": FIELD_NAME, "not": {"enum": SYSTEM_FIELDS}}
DEFINITION_PROPERTIES: Schema = {
    "name": {"type": "string", "pattern": COLLECTION_NAME, "not": {"const": "users"}},
    "fields": {
        "type": "object",
        "maxProperties": 200,
        "propertyNames": FIELD_NAMES,
        "additionalProperties": ref("Field"),
    },
    "indexes": {
        "type": "array",
        "maxItems": 32,
        "items": {
            "type": "object",
            "required": ["fields"],
            "properties": {
                "fields": {
                    "type": "array",
                    "items": STRING,
                    "minItems": 1,
                    "maxItems": 8,
                    "uniqueItems": True,
                    "description": "Field paths such as `score` or `author.name`",
                },
                "unique": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    },
    "rules": {
        "type": "object",
        "description": 'Per action: null = admins only, "" = anyone, else an expression',
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
}

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
            "id": {"type": "string", "pattern": UUID7},
            "owner": {"type": ["string", "null"]},
            "created": TIMESTAMP,
            "updated": TIMESTAMP,
            "version": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": True,
    },
    "RecordCreate": client_fields(
        "Client fields; `id` may carry a client-made UUIDv7", SYSTEM_FIELDS[1:]
    ),
    "RecordPatch": client_fields(
        "A JSON merge patch (RFC 7396) of client fields: null removes a field", SYSTEM_FIELDS
    ),
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
        "properties": DEFINITION_PROPERTIES,
        "additionalProperties": False,
    },
    "CollectionPatch": {
        "type": "object",
        "description": "Each section given replaces the stored one; `name` cannot change",
        "properties": DEFINITION_PROPERTIES,
        "additionalProperties": False,
    },
    "Collection": {
        "type": "object",
        "required": [*DEFINITION_PROPERTIES, "created", "updated", "version"],
        "properties": {
            **DEFINITION_PROPERTIES,
            "created": TIMESTAMP,
            "updated": TIMESTAMP,
            "version": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": False,
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
                        "collection": {"type": "string", "pattern": COLLECTION_NAME},
                        "id": {"type": "string", "pattern": UUID7},
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
    param(
        "limit",
        "query",
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                {"type": "string", "maxLength": 0},
            ]
        },
        f"Page size, 1 to {MAX_LIMIT}; absent or empty means {DEFAULT_LIMIT}",
    ),
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
