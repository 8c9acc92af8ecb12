"""Three ``roost serve`` instances on one throwaway PostgreSQL and Redis behind a real
load balancer, each test once per shipped configuration: HAProxy running
``deploy/haproxy.cfg`` as it is (its addresses from the environment), and nginx running
``deploy/nginx.conf`` with its listen address and upstream list replaced.

- Requests sent through HAProxy reach all three instances, about evenly: each instance's
  own ``/metrics`` counts them.
- A WebSocket client connected through HAProxy (so to one instance) receives an event
  for every write sent through HAProxy, though the writes went to the other instances.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer
from guarantees.live import admin_token, create_collection
from realtime.client import RealtimeClient
from redis_server import RedisServer
from scaleout.cluster import DEPLOY, INSTANCES, answered, running_cluster, start_haproxy

pytestmark = pytest.mark.slow


def start_nginx(folder: Path, port: int, servers: list[LiveServer]) -> subprocess.Popen[bytes]:
    upstreams = folder / "upstreams.conf"
    upstreams.write_text(
        "".join(f"server 127.0.0.1:{s.port} max_fails=2 fail_timeout=5s;\n" for s in servers)
    )
    shipped = (DEPLOY / "nginx.conf").read_text()
    site = shipped.replace("listen 80;", f"listen 127.0.0.1:{port};").replace(
        "include /etc/nginx/roost-upstreams.conf;", f"include {upstreams};"
    )
    assert f"include {upstreams};" in site and f":{port};" in site, "the shipped file changed"
    (folder / "roost.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (folder / "nginx.conf").write_text(
        f"daemon off; user root; pid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'nginx.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; {temp} uwsgi_temp_path {folder / 'uwsgi'};"
        f" scgi_temp_path {folder / 'scgi'}; include {folder / 'roost.conf'}; }}\n"
    )
    return subprocess.Popen(
        ["nginx", "-c", str(folder / "nginx.conf"), "-e", str(folder / "nginx.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


PROXIES = {"haproxy": start_haproxy, "nginx": start_nginx}


@pytest.fixture(params=sorted(PROXIES))
def cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_url: str,
    redis_server: RedisServer,
) -> Iterator[tuple[str, list[LiveServer]]]:
    """The load balancer's URL and the instances behind it."""
    proxy = PROXIES[request.param]
    with running_cluster(tmp_path, postgres_url, redis_server.url, proxy) as running:
        yield running.url, running.servers


async def test_requests_through_the_load_balancer_reach_every_instance(
    cluster: tuple[str, list[LiveServer]],
) -> None:
    url, servers = cluster
    sent = 300
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:

        async def client(count: int) -> None:
            for _ in range(count):
                response = await http.get("/api/health")
                assert response.status_code == 200, response.text

        await asyncio.gather(*(client(sent // 10) for _ in range(10)))
    counts = [answered(server, route="/api/health") for server in servers]
    assert sum(counts) == sent, counts
    assert min(counts) >= sent / INSTANCES / 2, f"unevenly spread: {counts}"


async def test_a_websocket_through_the_load_balancer_hears_writes_others_took(
    cluster: tuple[str, list[LiveServer]],
) -> None:
    url, servers = cluster
    token = admin_token(servers[0])
    create_collection(
        url,
        token,
        {
            "name": "posts",
            "fields": {"n": {"type": "integer"}},
            "rules": {"list": "", "view": "", "create": None, "update": None, "delete": None},
        },
    )
    writes = 30
    async with RealtimeClient.connect(url, token) as listener:
        await listener.subscribe("s1", "posts")
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            headers = {"Authorization": f"Bearer {token}"}
            for n in range(writes):
                response = await http.post(
                    "/api/collections/posts/records", json={"n": n}, headers=headers
                )
                assert response.status_code == 201, response.text
        await listener.wait_for(lambda _: len(listener.events("s1")) >= writes, timeout=15)
        assert sorted(event["record"]["n"] for event in listener.events("s1")) == list(
            range(writes)
        )
    records = "/api/collections/{name}/records"
    writers = [answered(server, route=records, status="201") for server in servers]
    # The listener is on one instance; writes taken by two or more reached it from
    # another (leastconn sends them away from the instance holding the WebSocket).
    assert sum(writers) == writes, f"writes per instance: {writers}"
    assert sum(1 for count in writers if count) >= 2, f"writes per instance: {writers}"
