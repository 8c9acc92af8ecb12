"""The whole URL table in one list."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Route, WebSocketRoute

from roost.http.endpoints import (
    auth,
    batch,
    collections,
    health,
    metrics,
    openapi,
    pages,
    realtime,
    records,
    sync,
    users,
)

RECORD = "/api/collections/{name}/records/{id}"
SSE = "/api/realtime/sse"
OPERATIONS = ("/api/health", "/api/ready", "/metrics")
"""What an instance of every role answers."""

ROUTES = [  # the record routes first: Starlette tries routes in order
    Route(RECORD, records.get_record, methods=["GET"]),
    Route("/api/collections/{name}/records", records.list_records, methods=["GET"]),
    Route("/api/collections/{name}/records", records.create_record, methods=["POST"]),
    Route(RECORD, records.update_record, methods=["PATCH"]),
    Route(RECORD, records.delete_record, methods=["DELETE"]),
    Route("/api/health", health.health, methods=["GET"]),
    Route("/api/ready", health.ready, methods=["GET"]),
    Route("/metrics", metrics.metrics, methods=["GET"]),
    Route("/api/openapi.json", openapi.openapi, methods=["GET"]),
    Route("/api/collections", collections.list_collections, methods=["GET"]),
    Route("/api/collections", collections.create_collection, methods=["POST"]),
    Route("/api/collections/{name}", collections.get_collection, methods=["GET"]),
    Route("/api/collections/{name}", collections.update_collection, methods=["PATCH"]),
    Route("/api/collections/{name}", collections.delete_collection, methods=["DELETE"]),
    Route("/api/batch", batch.batch, methods=["POST"]),
    Route("/api/sync", sync.sync_changes, methods=["GET"]),
    Route("/api/users", users.list_users, methods=["GET"]),
    Route("/api/users/{id}", users.get_user, methods=["GET"]),
    Route("/api/auth/signup", auth.signup, methods=["POST"]),
    Route("/api/auth/login", auth.login, methods=["POST"]),
    Route("/api/auth/anonymous", auth.anonymous, methods=["POST"]),
    Route("/api/auth/upgrade", auth.upgrade, methods=["POST"]),
    Route("/api/auth/refresh", auth.refresh, methods=["POST"]),
    Route("/api/auth/logout", auth.logout, methods=["POST"]),
    Route("/api/auth/sessions", auth.list_sessions, methods=["GET"]),
    Route("/api/auth/sessions", auth.revoke_other_sessions, methods=["DELETE"]),
    Route("/api/auth/sessions/{id}", auth.revoke_session, methods=["DELETE"]),
    Route("/api/auth/me", auth.get_me, methods=["GET"]),
    Route("/api/auth/me", auth.update_me, methods=["PATCH"]),
    Route("/api/auth/me", auth.delete_me, methods=["DELETE"]),
    Route("/api/auth/password/change", auth.change_password, methods=["POST"]),
    Route("/api/auth/oidc/{provider}", auth.oidc, methods=["POST"]),
    Route("/api/auth/password/forgot", auth.forgot_password, methods=["POST"]),
    Route("/api/auth/password/reset", auth.reset_password, methods=["POST"]),
    Route("/api/auth/verify/request", auth.request_verification, methods=["POST"]),
    Route("/api/auth/verify/confirm", auth.confirm_verification, methods=["POST"]),
    Route(SSE, realtime.sse, methods=["GET"]),
    Route("/auth/reset-password", pages.reset_password, methods=["GET"]),
    Route("/auth/verify-email", pages.verify_email, methods=["GET"]),
]
SOCKETS = [WebSocketRoute("/api/realtime", realtime.socket)]


def routes_for(role: str) -> Sequence[BaseRoute]:
    """What an instance of ``role`` (``Settings.role``) serves; other paths are 404."""
    if role == "api":
        return [route for route in ROUTES if route.path != SSE]
    operations = [route for route in ROUTES if route.path in OPERATIONS]
    if role == "realtime":
        return [*operations, *(route for route in ROUTES if route.path == SSE), *SOCKETS]
    if role == "worker":
        return operations
    return [*ROUTES, *SOCKETS]
