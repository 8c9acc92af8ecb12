"""Request metrics in ``GET /metrics``: counted by route template and status (never by
path, so ids and typos cannot multiply the series), timed, in flight, and the build."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from roost import __version__
from roost.ids import new_id

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(admin: httpx.AsyncClient) -> Samples:
    response = await admin.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_route_template_and_status(
    admin: httpx.AsyncClient,
) -> None:
    for _ in range(3):
        assert (await admin.get("/api/health")).status_code == 200
    missing = [f"/api/collections/posts/records/{new_id()}" for _ in range(2)]
    for path in missing:
        assert (await admin.get(path)).status_code == 404
    assert (await admin.get("/nowhere/at/all")).status_code == 404
    assert (await admin.delete("/api/health")).status_code == 405

    samples = await scrape(admin)
    requests = "roost_http_requests_total"
    assert value(samples, requests, method="GET", route="/api/health", status="200") == 3
    record = "/api/collections/{name}/records/{id}"
    assert value(samples, requests, method="GET", route=record, status="404") == 2
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    assert value(samples, requests, method="DELETE", route="unmatched", status="405") == 1
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not any(route and ("nowhere" in route or "posts" in route) for route in routes)

    seconds = "roost_http_request_seconds_count"
    assert value(samples, seconds, method="GET", route="/api/health") == 3
    assert value(samples, seconds, method="GET", route=record) == 2
    assert value(samples, "roost_http_requests_in_flight") == 1  # the scrape itself

    again = await scrape(admin)  # the first scrape is counted too, once it ended
    assert value(again, requests, method="GET", route="/metrics", status="200") == 1
    assert value(again, "roost_http_requests_in_flight") == 1


async def test_refused_scrapes_are_counted_and_the_build_is_named(
    admin: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    token = admin.headers.pop("Authorization")
    assert (await client.get("/metrics")).status_code == 401
    admin.headers["Authorization"] = token
    samples = await scrape(admin)
    route = "/metrics"
    assert value(samples, "roost_http_requests_total", method="GET", route=route, status="401") == 1
    build = [labels for name, labels in samples if name == "roost_build_info"]
    assert len(build) == 1 and dict(build[0])["version"] == __version__
