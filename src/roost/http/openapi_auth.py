"""The OpenAPI paths of accounts: ``/api/users``, ``/api/auth/...`` and the mail pages."""

from __future__ import annotations

from roost.http.openapi_schemas import (
    BODY_ERRORS,
    CACHED,
    LIST_PARAMETERS,
    STRING,
    UUID7,
    Schema,
    ok,
    operation,
    param,
    ref,
)

USER_ID = param("id", "path", {"type": "string", "pattern": UUID7}, "A user id (UUIDv7)")
SIGNED_IN = ("401", "503")
"""What every operation on the signed-in account may answer besides its own statuses."""


def user_paths() -> dict[str, Schema]:
    return {
        "/api/users": {
            "get": operation(
                "List users (the `users` collection under its list rule: by default a user"
                " sees only themself, an admin everyone)",
                {"200": ok("A page", ref("UserPage"), CACHED), "304": ok("Not modified")},
                parameters=[p for p in LIST_PARAMETERS if p["name"] != "name"],
                errors=("400", "401", "403", "503"),
            )
        },
        "/api/users/{id}": {
            "get": operation(
                "Get a user (404 when the view rule hides them)",
                {"200": ok("Found", ref("User"), CACHED), "304": ok("Not modified")},
                parameters=[USER_ID, param("If-None-Match", "header", STRING)],
                errors=("400", "401", "403", "404", "503"),
            )
        },
    }


def auth_paths() -> dict[str, Schema]:
    signed_in = ref("SignedIn")
    sign_in_errors = (*BODY_ERRORS, "429", "503")
    return {
        "/api/auth/signup": {
            "post": operation(
                "Create an account with email and password, and sign in",
                {"201": ok("Signed in", signed_in)},
                body=ref("Signup"),
                errors=(*sign_in_errors, "403", "409"),
                description="409 when the email has an account; 403 when `data` names an"
                " account field.",
            )
        },
        "/api/auth/login": {
            "post": operation(
                "Sign in with email and password",
                {"200": ok("Signed in", signed_in)},
                body=ref("Login"),
                errors=(*sign_in_errors, "401"),
                description="A wrong password and an unknown email are the same 401.",
            )
        },
        "/api/auth/anonymous": {
            "post": operation(
                "Create a guest account and sign in",
                {"201": ok("Signed in as a guest", signed_in)},
                body=ref("Device"),
                errors=sign_in_errors,
            )
        },
        "/api/auth/upgrade": {
            "post": operation(
                "Give the signed-in guest an email and password (same id, same records)",
                {"200": ok("The same session, the user updated", signed_in)},
                body=ref("Upgrade"),
                errors=(*BODY_ERRORS, *SIGNED_IN, "409"),
            )
        },
        "/api/auth/refresh": {
            "post": operation(
                "Trade a refresh token for a new access token and the next refresh token",
                {"200": ok("Signed in", signed_in)},
                body=ref("Refresh"),
                errors=(*sign_in_errors, "401"),
                description="Presenting a used refresh token again (after a 30 s grace for"
                " lost answers) revokes its session.",
            )
        },
        "/api/auth/logout": {
            "post": operation(
                "Sign out: revoke this session", {"204": ok("Signed out")}, errors=SIGNED_IN
            )
        },
        "/api/auth/sessions": {
            "get": operation(
                "The caller's live sessions (devices)",
                {
                    "200": ok(
                        "Sessions, most recently used first",
                        {
                            "type": "object",
                            "required": ["items"],
                            "properties": {"items": {"type": "array", "items": ref("Session")}},
                        },
                    )
                },
                errors=SIGNED_IN,
            ),
            "delete": operation(
                "Revoke every other session of the caller",
                {
                    "200": ok(
                        "How many were revoked",
                        {
                            "type": "object",
                            "required": ["revoked"],
                            "properties": {"revoked": {"type": "integer", "minimum": 0}},
                        },
                    )
                },
                errors=SIGNED_IN,
            ),
        },
        "/api/auth/sessions/{id}": {
            "delete": operation(
                "Revoke one of the caller's sessions",
                {"204": ok("Revoked")},
                parameters=[param("id", "path", STRING, "A session id")],
                errors=(*SIGNED_IN, "404"),
            )
        },
        "/api/auth/me": {
            "get": operation(
                "The signed-in user", {"200": ok("The user", ref("User"))}, errors=SIGNED_IN
            ),
            "patch": operation(
                "Change the caller's profile fields (a merge patch)",
                {"200": ok("The user", ref("User"))},
                body=ref("ProfilePatch"),
                errors=(*BODY_ERRORS, *SIGNED_IN, "403", "409"),
            ),
            "delete": operation(
                "Delete the account, its sessions and every record it owns",
                {"204": ok("Deleted")},
                errors=SIGNED_IN,
            ),
        },
        "/api/auth/password/change": {
            "post": operation(
                "Change the password; every other session is signed out",
                {"204": ok("Changed")},
                body=ref("PasswordChange"),
                errors=(*BODY_ERRORS, *SIGNED_IN),
            )
        },
        "/api/auth/password/forgot": {
            "post": operation(
                "Mail a password-reset link (the answer is the same whether or not the"
                " address has an account)",
                {"202": ok("Accepted", ref("Accepted"))},
                body=ref("PasswordForgot"),
                errors=sign_in_errors,
            )
        },
        "/api/auth/password/reset": {
            "post": operation(
                "Set a new password with the mailed token; every session is signed out",
                {"204": ok("Changed")},
                body=ref("PasswordReset"),
                errors=(*sign_in_errors, "401"),
            )
        },
        "/api/auth/verify/request": {
            "post": operation(
                "Mail a link that confirms the caller's email address",
                {"202": ok("Accepted", ref("Accepted"))},
                errors=("400", *SIGNED_IN, "409"),
                description="400 when the account has no email (a guest), 409 when it is"
                " already verified.",
            )
        },
        "/api/auth/verify/confirm": {
            "post": operation(
                "Confirm an email address with the mailed token",
                {"200": ok("The user, verified", ref("User"))},
                body=ref("VerifyConfirm"),
                errors=(*sign_in_errors, "401"),
            )
        },
        "/api/auth/oidc/{provider}": {
            "post": operation(
                "Sign in with an identity provider's ID token (Apple, Google, ...)",
                {"200": ok("Signed in", signed_in)},
                body=ref("IdToken"),
                parameters=[param("provider", "path", STRING, "`apple`, `google`, ...")],
                errors=(*sign_in_errors, "401", "404"),
                description="404 for a provider this server has no client id for.",
            )
        },
        "/auth/reset-password": {
            "get": operation(
                "The page a password-reset mail links to",
                {"200": html_page()},
                parameters=[param("token", "query", STRING, "The mailed token")],
                errors=(),
            )
        },
        "/auth/verify-email": {
            "get": operation(
                "The page a verification mail links to",
                {"200": html_page()},
                parameters=[param("token", "query", STRING, "The mailed token")],
                errors=(),
            )
        },
    }


def html_page() -> Schema:
    return {
        "description": "An HTML page that posts the token to the JSON API",
        "content": {"text/html": {"schema": STRING}},
    }
