"""Reading a live server's ``GET /metrics`` as Prometheus does.

Imported as ``metrics.scrape`` (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(url: str, token: str) -> list[Sample]:
    """Every sample of one scrape of the server at ``url`` (a new connection each time:
    with several workers, any of them may answer)."""
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    families = text_string_to_metric_families(response.text)
    return [sample for family in families for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())
