"""The whole URL table in one list."""

from __future__ import annotations

from starlette.routing import Route

from roost.http.endpoints import batch, collections, health, openapi, records

RECORD = "/api/collections/{name}/records/{id}"

ROUTES = [
    Route("/api/health", health.health, methods=["GET"]),
    Route("/api/ready", health.ready, methods=["GET"]),
    Route("/api/openapi.json", openapi.openapi, methods=["GET"]),
    Route("/api/collections", collections.list_collections, methods=["GET"]),
    Route("/api/collections", collections.create_collection, methods=["POST"]),
    Route("/api/collections/{name}", collections.get_collection, methods=["GET"]),
    Route("/api/collections/{name}", collections.update_collection, methods=["PATCH"]),
    Route("/api/collections/{name}", collections.delete_collection, methods=["DELETE"]),
    Route("/api/collections/{name}/records", records.list_records, methods=["GET"]),
    Route("/api/collections/{name}/records", records.create_record, methods=["POST"]),
    Route(RECORD, records.get_record, methods=["GET"]),
    Route(RECORD, records.update_record, methods=["PATCH"]),
    Route(RECORD, records.delete_record, methods=["DELETE"]),
    Route("/api/batch", batch.batch, methods=["POST"]),
]
