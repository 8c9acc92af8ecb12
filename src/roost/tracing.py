"""Tracing with OpenTelemetry: a span per HTTP request and one per database statement,
exported over OTLP/HTTP to the collector at ``Settings.otel_exporter_otlp_endpoint``.

Imported only when that setting is given (``components.open_components``), so without it
nothing of OpenTelemetry is loaded. Spans leave in batches from the SDK's own thread
(``BatchSpanProcessor``): a slow or absent collector costs dropped spans, never a request's
time. A request's ``traceparent`` header (W3C Trace Context) makes its span a child of the
caller's; the sampler follows the SDK's ``OTEL_TRACES_SAMPLER`` (default: the parent's
decision, else every trace). Spans carry the request id, never who the caller is: the
access log line with the same ``request_id`` names the user.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import anyio.to_thread

from roost import __version__
from roost.backends import MissingDependency
from roost.settings import Settings
from roost.storage.base import STATEMENT_SPAN, StatementSpan

try:
    from opentelemetry import context, trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.semconv.attributes import db_attributes, http_attributes
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise MissingDependency("opentelemetry-sdk", extra="otel") from error

EXPORT_TIMEOUT_SECONDS = 5.0
"""Longest one export may take, retries included (on the exporter's thread); also the
longest shutdown waits for the last spans."""
MAX_QUEUED_SPANS = 2048
"""Spans waiting for export; more are dropped (a collector that is down or too slow)."""
TRACE_HEADERS = (b"traceparent", b"tracestate")
REQUEST_ID = "roost.request_id"
DATABASES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
"""``db.system.name`` by ``database_url`` scheme."""


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL under a collector's base URL, as the standard
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` means it."""
    return endpoint.rstrip("/") + "/v1/traces"


class Tracing:
    """The spans of one app, from its start to ``aclose()``."""

    def __init__(self, settings: Settings) -> None:
        resource = Resource.create(
            {"service.name": settings.otel_service_name, "service.version": __version__}
        )
        self._provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        exporter = OTLPSpanExporter(
            endpoint=traces_url(settings.otel_exporter_otlp_endpoint),
            timeout=EXPORT_TIMEOUT_SECONDS,
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=MAX_QUEUED_SPANS,
                export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000,
            )
        )
        self._tracer = self._provider.get_tracer("roost", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._database = DATABASES.get(settings.database_url.split(":", 1)[0], "other_sql")

    def start(
        self, method: str, headers: Iterable[tuple[bytes, bytes]], request_id: str
    ) -> RequestSpan:
        """The span of a request that has just arrived, current until its ``end()``."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name in TRACE_HEADERS
        }
        span = self._tracer.start_span(
            method,
            context=self._propagator.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={http_attributes.HTTP_REQUEST_METHOD: method, REQUEST_ID: request_id},
        )
        return RequestSpan(span, method, self.statement)

    @contextmanager
    def statement(self, sql: str) -> Iterator[None]:
        """A span around one statement, named by its operation (``SELECT``, ``INSERT``...).
        The SQL has placeholders, never values."""
        words = sql.split(None, 1)
        operation = words[0].upper() if words else "SQL"
        attributes = {
            db_attributes.DB_SYSTEM_NAME: self._database,
            db_attributes.DB_OPERATION_NAME: operation,
            db_attributes.DB_QUERY_TEXT: sql,
        }
        kind = trace.SpanKind.CLIENT
        with self._tracer.start_as_current_span(operation, kind=kind, attributes=attributes):
            yield

    async def aclose(self) -> None:
        """Export the spans still queued (within ``EXPORT_TIMEOUT_SECONDS``), off the
        event loop, and stop the exporter's thread."""
        await anyio.to_thread.run_sync(self._provider.shutdown)


class RequestSpan:
    """One request's span; statements run until ``end()`` become its children."""

    def __init__(self, span: trace.Span, method: str, statement: StatementSpan) -> None:
        self._span = span
        self._method = method
        self._context = context.attach(trace.set_span_in_context(span))
        self._statements = STATEMENT_SPAN.set(statement)

    @property
    def trace_id(self) -> str:
        """The trace's id as hex, for the access log line."""
        return trace.format_trace_id(self._span.get_span_context().trace_id)

    def end(self, route: str | None, status: int) -> None:
        """Name the span after its route template (``GET /api/collections/{name}``; only
        the method when no route matched), record the status and send it."""
        span = self._span
        if route is not None:
            span.update_name(f"{self._method} {route}")
            span.set_attribute(http_attributes.HTTP_ROUTE, route)
        if status:
            span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
        if status >= 500:
            span.set_status(trace.StatusCode.ERROR)
        span.end()
        STATEMENT_SPAN.reset(self._statements)
        context.detach(self._context)
