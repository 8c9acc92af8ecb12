"""Request ids made by the server: 32 hex digits, unique across requests and processes."""

from __future__ import annotations

import multiprocessing
import re

from roost.http.middleware import _request_id

GENERATED = re.compile(r"^[0-9a-f]{32}$")
NO_HEADERS = {"headers": []}


def make_ids(count: int) -> list[bytes]:
    return [_request_id(NO_HEADERS) for _ in range(count)]


def test_ids_are_unique_in_a_process_and_in_each_forked_worker() -> None:
    every = make_ids(1000)
    for _ in range(2):  # two forked workers, as Granian forks them
        with multiprocessing.get_context("fork").Pool(1) as pool:
            every += pool.apply(make_ids, (1000,))
    assert all(GENERATED.match(found.decode()) for found in every)
    assert len(set(every)) == len(every)
    prefixes = {found[:16] for found in every}
    assert len(prefixes) == 3  # one random prefix per process, made again after the fork
