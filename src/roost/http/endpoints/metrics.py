"""``GET /metrics``: the Prometheus text format, for the metrics token or an admin."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from roost.http.context import components, require_admin


async def metrics(request: Request) -> Response:
    found = components(request)
    token = found.settings.metrics_token
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if (
        token is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(sent.strip().encode(), token.get_secret_value().encode())
    ):
        await require_admin(request)
    return Response(found.metrics.render(), media_type=CONTENT_TYPE_LATEST)
