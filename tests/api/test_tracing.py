"""Tracing: a real ``roost serve`` exporting OTLP/HTTP to a collector stand-in
(``tests/otlp_collector.py``), whose protobuf is decoded to check the spans."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from conftest import LiveServer, make_settings, serving
from guarantees.live import admin_token, create_collection
from otlp_collector import Collector, attributes
from roost.settings import Settings
from server_log import access_line, logging_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
NOTES = {"name": "notes", "fields": {"title": {"type": "string"}}, "rules": {"list": ""}}


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as found:
        yield found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, collector: Collector) -> Iterator[LiveServer]:
    env = {
        "ROOST_OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "ROOST_OTEL_SERVICE_NAME": "roost-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # the SDK's own variable: export every 50 ms
    }
    with logging_server(tmp_path_factory.mktemp("traced"), env) as live:
        yield live


def request(request_id: str) -> Callable[[Span], bool]:
    """Finds the span of the request with this ``X-Request-Id``."""
    return lambda span: attributes(span).get("roost.request_id") == request_id


def test_a_request_is_a_span_in_the_callers_trace_with_its_statements(
    server: LiveServer, collector: Collector
) -> None:
    token = admin_token(server)
    create_collection(server.url, token, NOTES)
    response = httpx.get(
        f"{server.url}/api/collections/notes/records",
        headers={
            "Authorization": f"Bearer {token}",
            "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
            "X-Request-Id": "traced-1",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text

    span = collector.wait_for(request("traced-1"))
    assert span.name == "GET /api/collections/{name}/records"
    assert span.kind == Span.SPAN_KIND_SERVER
    assert (span.trace_id.hex(), span.parent_span_id.hex()) == (TRACE_ID, PARENT_ID)
    assert attributes(span) == {
        "http.request.method": "GET",
        "http.route": "/api/collections/{name}/records",
        "http.response.status_code": 200,
        "roost.request_id": "traced-1",
    }  # no user, no path, no query: the access line with this request id names the user
    assert span.status.code != Status.STATUS_CODE_ERROR
    assert collector.service_names == {"roost-under-test"}

    statements = [s for s in collector.spans if s.parent_span_id == span.span_id]
    assert statements, "no statement spans"
    for statement in statements:
        found = attributes(statement)
        assert statement.kind == Span.SPAN_KIND_CLIENT
        assert statement.trace_id.hex() == TRACE_ID
        assert found["db.system.name"] == "sqlite"
        assert statement.name == found["db.operation.name"]
        assert str(found["db.query.text"]).upper().startswith(statement.name)
    assert "SELECT" in {statement.name for statement in statements}
    orphans = [
        s.name for s in collector.spans if s.kind == Span.SPAN_KIND_CLIENT and not s.parent_span_id
    ]
    assert orphans == []  # background work (the realtime feed polls the log) is not traced

    line = access_line(server, "request", request_id="traced-1")
    assert (line["trace_id"], line["route"]) == (TRACE_ID, "/api/collections/{name}/records")


def test_without_traceparent_a_request_starts_a_trace_and_no_route_names_it_by_method(
    server: LiveServer, collector: Collector
) -> None:
    response = httpx.get(
        f"{server.url}/no/such/path?token=x", headers={"X-Request-Id": "untraced-1"}, timeout=30
    )
    assert response.status_code == 404

    span = collector.wait_for(request("untraced-1"))
    assert span.name == "GET"
    assert span.parent_span_id == b""
    assert span.trace_id.hex() not in (TRACE_ID, "0" * 32)
    assert attributes(span) == {
        "http.request.method": "GET",
        "http.response.status_code": 404,
        "roost.request_id": "untraced-1",
    }


async def test_a_collector_that_hangs_slows_no_request(
    tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    settings = make_settings(tmp_path, otel_exporter_otlp_endpoint=collector.url)
    collector.hold()
    try:
        async with serving(settings) as (http, _):
            first = collector.received
            await http.get("/api/health", headers={"X-Request-Id": "held-0"})
            deadline = time.monotonic() + 10
            while collector.received == first:  # an export is waiting for the collector
                assert time.monotonic() < deadline, "nothing was exported"
                await asyncio.sleep(0.01)
            for number in range(1, 11):
                started = time.perf_counter()
                headers = {"X-Request-Id": f"held-{number}"}
                assert (await http.get("/api/health", headers=headers)).status_code == 200
                assert time.perf_counter() - started < 1.0
            collector.release()
    finally:
        collector.release()
    for number in range(11):  # all exported by the shutdown, none lost to the wait
        collector.wait_for(request(f"held-{number}"))


async def test_statements_are_child_spans_on_each_backend(
    tmp_path: Path, database_url: str, collector: Collector
) -> None:
    settings = make_settings(
        tmp_path, database_url=database_url, otel_exporter_otlp_endpoint=collector.url
    )
    system = "postgresql" if database_url.startswith("postgres") else "sqlite"
    async with serving(settings) as (http, _):
        headers = {"X-Request-Id": f"on-{system}"}
        response = await http.post("/api/auth/anonymous", json={}, headers=headers)
        assert response.status_code == 201, response.text
    span = collector.wait_for(request(f"on-{system}"))  # sent at the latest by the shutdown
    assert span.name == "POST /api/auth/anonymous"
    statements = [s for s in collector.spans if s.parent_span_id == span.span_id]
    assert {"INSERT", "SELECT"} <= {s.name for s in statements}
    assert {attributes(s)["db.system.name"] for s in statements} == {system}
    assert all(s.trace_id == span.trace_id for s in statements)


def test_the_standard_variables_configure_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ROOST_OTEL_EXPORTER_OTLP_ENDPOINT", "ROOST_OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    settings = Settings()
    assert settings.otel_exporter_otlp_endpoint == "http://collector:4318"
    assert settings.otel_service_name == "checkout"
    monkeypatch.setenv("ROOST_OTEL_EXPORTER_OTLP_ENDPOINT", "https://roost-collector")
    assert Settings().otel_exporter_otlp_endpoint == "https://roost-collector"


def test_without_an_endpoint_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    script = """
import asyncio, sys
import httpx
from roost.http.app import create_app
from roost.settings import Settings

async def main() -> None:
    settings = Settings(data_dir=sys.argv[1], secret_key="s" * 40, env="dev")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost") as http:
            assert (await http.get("/api/health")).status_code == 200
    print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))

asyncio.run(main())
"""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ROOST_", "OTEL_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        check=True,
        env=env,
        timeout=60,
    )
    assert done.stdout.decode().splitlines()[-1] == "[]"  # after structlog's default output
