"""An OpenTelemetry collector stand-in for tests: OTLP/HTTP protobuf on loopback.

    with Collector() as collector:
        settings = make_settings(..., otel_exporter_otlp_endpoint=collector.url)
        ...
        span = collector.wait_for(lambda s: s.name == "GET /api/health")

It accepts ``POST /v1/traces`` (``ExportTraceServiceRequest``, gzip or not) on a thread
and keeps every span received in ``spans``. After ``hold()`` it takes each request and
answers only at ``release()`` (a collector that hangs); ``received`` counts the requests
that arrived, answered or not.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

HOLD_LIMIT_SECONDS = 30.0
"""A held request is answered after this long at the latest (a test that forgot it)."""


def attributes(span: Span) -> dict[str, object]:
    """A span's attributes as plain Python values."""
    return {item.key: _value(item) for item in span.attributes}


def _value(item: KeyValue) -> object:
    kind = item.value.WhichOneof("value")
    return None if kind is None else getattr(item.value, kind)


class Collector:
    """A real HTTP server on a free port of 127.0.0.1; ``url`` is the OTLP base URL."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.service_names: set[str] = set()
        self.received = 0
        self._open = threading.Event()
        self._open.set()
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def hold(self) -> None:
        """Answer no request until ``release()``."""
        self._open.clear()

    def release(self) -> None:
        """Answer the held requests, and the next ones at once."""
        self._open.set()

    def wait_for(self, found: Callable[[Span], bool], timeout: float = 10.0) -> Span:
        """The first span received for which ``found`` is true, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for span in self.spans:
                    if found(span):
                        return span
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [span.name for span in self.spans]
                    raise AssertionError(f"no such span in {timeout} s; received {names}")
                self._changed.wait(left)

    def _received(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self._changed:
            for resource_spans in request.resource_spans:
                for item in resource_spans.resource.attributes:
                    if item.key == "service.name":
                        self.service_names.add(item.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
            self._changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                collector.received += 1
                collector._open.wait(HOLD_LIMIT_SECONDS)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector._received(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output quiet

        return Handler
