"""Building blocks of the OpenAPI document: helpers, parameters, component schemas."""

from __future__ import annotations

from typing import Any

from roost.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from roost.query.limits import DEFAULT_LIMIT, MAX_LIMIT
from roost.realtime import sync

Schema = dict[str, Any]

ERROR_STATUSES = {
    "400": "Bad input (invalid_json, validation_failed, invalid_filter, invalid_cursor, ...)",
    "401": "Missing or invalid credentials",
    "403": "The caller may not do this",
    "404": "No such collection, record or endpoint",
    "405": "Method not allowed",
    "409": "Conflict with existing data",
    "410": "The cursor's changes are gone (pruned, or another database): sync from scratch",
    "412": "If-Match names a stale version",
    "413": "Body too large",
    "415": "Body is not JSON",
    "422": "Idempotency-Key reused with a different request",
    "429": "Too many sign-in attempts; Retry-After says when to try again",
    "503": "A backend is unavailable",
}
RECORD_ERRORS = tuple(status for status in ERROR_STATUSES if status not in ("410", "429"))
"""Every error a collection or record operation may answer (no rate limit there)."""
SYNC_ERRORS = ("400", "401", "403", "404", "410", "503")
"""What ``GET /api/sync`` may answer instead of a page."""
BODY_ERRORS = ("400", "413", "415")
"""What any operation that reads a JSON body may answer about the body itself."""


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
    errors: tuple[str, ...] = RECORD_ERRORS,
    description: str = "",
) -> Schema:
    result: Schema = {"summary": summary, "responses": dict(responses)}
    if description:
        result["description"] = description
    for status in errors:
        error: Schema = {
            "description": ERROR_STATUSES[status],
            "content": {"application/problem+json": {"schema": ref("Problem")}},
        }
        if status == "429":
            error["headers"] = {"Retry-After": {"schema": STRING, "description": "Seconds to wait"}}
        result["responses"].setdefault(status, error)
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
NAME_TEXT = "[a-z][a-z0-9_]{0,60}"
COLLECTION_NAME = f"^{NAME_TEXT}$"
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
CACHED = {
    "ETag": {"schema": STRING, "description": "The record version, or a page's content tag"},
    "Cache-Control": {
        "schema": STRING,
        "description": "`private, no-cache` unless the collection sets `cache_max_age`",
    },
}
"""Headers of a record or page read: send the ETag back in ``If-None-Match`` for a 304."""
TIMESTAMP = {"type": "string", "format": "date-time"}
SPACES = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
"""What ``str.strip()`` removes and the server's ``\\s`` matches, spelled out: regex engines
disagree on ``\\s``."""
LOCAL = f"[^@\\u0000{SPACES}]"
EMAIL = {
    "type": "string",
    "maxLength": 254,
    # what the server accepts: trimmed, then local@domain.tld (compared lowercased)
    # (and, like every string of a record, without U+0000)
    "pattern": f"^[{SPACES}]*{LOCAL}{{1,64}}@{LOCAL}+\\.{LOCAL}+[{SPACES}]*$",
    "description": "An email address; surrounding spaces and case do not matter",
}
PASSWORD = {
    "type": "string",
    "minLength": MIN_PASSWORD_LENGTH,
    "maxLength": MAX_PASSWORD_LENGTH,
}
DEVICE = {"description": "A name for this device (a string), listed with the sessions"}
USER_FIELD_NAMES = ["email", "verified", "anonymous", "role"]


def client_fields(description: str, reserved: list[str]) -> Schema:
    """A JSON object of client fields whose top-level names avoid ``reserved``."""
    return {
        "type": "object",
        "description": description,
        "propertyNames": {"pattern": FIELD_NAME, "not": {"enum": reserved}},
        "additionalProperties": True,
    }


def listed(name: str) -> Schema:
    """An item of a page: the whole record, or its id and the paths ``fields`` asked for."""
    return {
        "anyOf": [
            ref(name),
            {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        ]
    }


FIELD_NAMES = {"pattern": FIELD_NAME, "not": {"enum": SYSTEM_FIELDS}}
DEFINITION_PROPERTIES: Schema = {
    "name": {"type": "string", "pattern": COLLECTION_NAME},
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
        "properties": {
            "strict": {"type": "boolean"},
            "cache_max_age": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": 365 * 24 * 3600,
                "description": "Seconds HTTP caches may reuse records and pages; null:"
                " revalidate every time",
            },
            "cache_lists": {
                "type": "boolean",
                "description": "Keep list pages in the server's cache until the next write",
            },
        },
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
    "User": {
        "type": "object",
        "description": "A record of the built-in `users` collection. `email` is hidden: only"
        " the user and admins see it. Profile fields sit beside the account fields.",
        "required": ["id", "owner", "created", "updated", "version"],
        "properties": {
            "id": {"type": "string", "pattern": UUID7},
            "owner": {"type": ["string", "null"]},
            "created": TIMESTAMP,
            "updated": TIMESTAMP,
            "version": {"type": "integer", "minimum": 1},
            "email": {"type": "string"},
            "verified": {"type": "boolean"},
            "anonymous": {"type": "boolean", "description": "A guest account"},
            "role": {"enum": ["user", "admin"]},
        },
        "additionalProperties": True,
    },
    "UserPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": listed("User")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "SignedIn": {
        "type": "object",
        "description": "A session: send `Authorization: Bearer <access_token>`; before it"
        " expires, trade `refresh_token` for a new pair at /api/auth/refresh",
        "required": ["token_type", "access_token", "expires_in", "user"],
        "properties": {
            "token_type": {"const": "Bearer"},
            "access_token": {"type": "string", "description": "A JWT"},
            "expires_in": {"type": "integer", "minimum": 1, "description": "Seconds"},
            "refresh_token": {
                "type": "string",
                "description": "Single use: each refresh returns the next one (absent from"
                " an upgrade, which keeps the session)",
            },
            "user": ref("User"),
        },
        "additionalProperties": False,
    },
    "Signup": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {
            "email": EMAIL,
            "password": PASSWORD,
            "device": DEVICE,
            "data": {
                "description": "Profile fields of the new user (a JSON object), validated"
                " against the `users` collection's field schema; never email, role or flags"
            },
        },
    },
    "Login": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {"email": STRING, "password": STRING, "device": DEVICE},
    },
    "Upgrade": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {"email": EMAIL, "password": PASSWORD},
    },
    "Refresh": {
        "type": "object",
        "required": ["refresh_token"],
        "properties": {"refresh_token": STRING},
    },
    "Device": {
        "type": "object",
        "properties": {"device": DEVICE},
    },
    "PasswordChange": {
        "type": "object",
        "required": ["current_password", "new_password"],
        "properties": {"current_password": STRING, "new_password": PASSWORD},
    },
    "PasswordForgot": {
        "type": "object",
        "description": "Always 202, so the answer does not reveal which addresses have accounts",
        "properties": {
            "email": {"description": "The account's email address; any other value is ignored"}
        },
    },
    "PasswordReset": {
        "type": "object",
        "required": ["token", "password"],
        "properties": {
            "token": {"type": "string", "description": "The token of the mailed link"},
            "password": PASSWORD,
        },
    },
    "VerifyConfirm": {
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "string", "description": "The token of the mailed link"}},
    },
    "IdToken": {
        "type": "object",
        "required": ["id_token"],
        "properties": {
            "id_token": {"type": "string", "description": "The provider's ID token (a JWT)"},
            "nonce": {
                "type": "string",
                "description": "The raw nonce the app sent to the provider (its SHA-256 is"
                " in the token, as Sign in with Apple does)",
            },
            "device": DEVICE,
        },
    },
    "Session": {
        "type": "object",
        "required": [
            *("id", "device", "user_agent", "ip", "created", "last_used", "expires"),
            "current",
        ],
        "properties": {
            "id": STRING,
            "device": STRING,
            "user_agent": STRING,
            "ip": STRING,
            "created": TIMESTAMP,
            "last_used": TIMESTAMP,
            "expires": TIMESTAMP,
            "current": {"type": "boolean", "description": "The session of this access token"},
        },
        "additionalProperties": False,
    },
    "ProfilePatch": client_fields(
        "A JSON merge patch of the caller's profile fields (never email, role or flags)",
        [*SYSTEM_FIELDS, *USER_FIELD_NAMES],
    ),
    "Accepted": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": STRING},
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
            "items": {"type": "array", "items": listed("Record")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "SyncPage": {
        "type": "object",
        "required": ["changes", "cursor", "has_more"],
        "properties": {
            "changes": {"type": "array", "items": ref("SyncChange")},
            "cursor": {
                "type": "string",
                "description": "Send it back as `since` for the next page (opaque)",
            },
            "has_more": {
                "type": "boolean",
                "description": "The page was full: ask again now with `cursor`",
            },
        },
        "additionalProperties": False,
    },
    "SyncChange": {
        "type": "object",
        "description": "Upsert the record on create, update and enter; remove it on delete"
        " and leave (it was deleted, or the caller may no longer see it)",
        "required": ["op", "collection", "id", "version", "record"],
        "properties": {
            "op": {"enum": ["create", "update", "delete", "enter", "leave"]},
            "collection": {"type": "string", "pattern": COLLECTION_NAME},
            "id": STRING,
            "version": {"type": "integer", "minimum": 1},
            "record": {"oneOf": [ref("Record"), {"type": "null"}]},
        },
        "additionalProperties": False,
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
            "values": {
                "type": ["array", "null"],
                "minItems": 1,
                "items": {"type": ["string", "number", "boolean"]},
                "description": "The only values the field may take",
            },
            "hidden": {
                "type": "boolean",
                "description": "Shown only to admins and the record's owner; nobody else may"
                " filter or sort on it",
            },
        },
        "additionalProperties": False,
    },
    "CollectionInput": {
        "type": "object",
        "required": ["name"],
        "properties": {
            **DEFINITION_PROPERTIES,
            "name": {
                "type": "string",
                "pattern": COLLECTION_NAME,
                "not": {"const": "users"},
                "description": "Not `users`: that collection is built in",
            },
        },
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

SYNC_PARAMETERS = [
    {
        **param(
            "collections",
            "query",
            {
                "type": "string",
                "pattern": f"^{NAME_TEXT}(,{NAME_TEXT}){{0,{sync.MAX_COLLECTIONS - 1}}}$",
            },
            f"Comma-separated collection names, 1 to {sync.MAX_COLLECTIONS}",
        ),
        "required": True,
    },
    param(
        "since",
        "query",
        STRING,
        "The cursor of the last page; absent or empty to sync from scratch",
    ),
    param(
        "limit",
        "query",
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": sync.MAX_LIMIT},
                {"type": "string", "maxLength": 0},
            ]
        },
        f"Records or changes read per page, 1 to {sync.MAX_LIMIT};"
        f" absent or empty means {sync.DEFAULT_LIMIT}",
    ),
]
