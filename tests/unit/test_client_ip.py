"""The client's address: the peer, or ``X-Forwarded-For`` read from the right past trusted hops."""

from __future__ import annotations

from typing import Any

import pytest

from roost.http.client import UNKNOWN, TrustedProxies, client_ip, parse_address

PROXY = ["10.0.0.1"]
NETS = ["10.0.0.0/8", "2001:db8:ffff::/48"]

# (name, trusted_proxies, peer, X-Forwarded-For values (one per header), expected client)
CASES: list[tuple[str, list[str], str | None, list[str], str]] = [
    ("no proxies: the peer", [], "203.0.113.7", [], "203.0.113.7"),
    ("no proxies: XFF ignored", [], "203.0.113.7", ["198.51.100.1"], "203.0.113.7"),
    ("untrusted peer: spoofed XFF ignored", PROXY, "203.0.113.7", ["10.0.0.1"], "203.0.113.7"),
    ("trusted peer, one hop", PROXY, "10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
    ("trusted peer without XFF: the peer", PROXY, "10.0.0.1", [], "10.0.0.1"),
    ("client-written entries left of the hop are ignored", PROXY, "10.0.0.1",
     ["6.6.6.6, 7.7.7.7, 198.51.100.1"], "198.51.100.1"),
    ("CIDR: trusted hops skipped from the right", NETS, "10.1.2.3",
     ["6.6.6.6, 198.51.100.1, 10.9.9.9, 10.0.0.2"], "198.51.100.1"),
    ("repeated headers joined in order", NETS, "10.1.2.3",
     ["6.6.6.6, 198.51.100.1", "10.9.9.9"], "198.51.100.1"),
    ("every hop trusted: the farthest", NETS, "10.1.2.3", ["10.2.0.1, 10.3.0.1"], "10.2.0.1"),
    ("IPv6 peer and client", NETS, "2001:db8:ffff::1", ["2001:DB8:1::5"], "2001:db8:1::5"),
    ("IPv6 untrusted peer", NETS, "2001:db8:1::9", ["198.51.100.1"], "2001:db8:1::9"),
    ("IPv4-mapped peer matches an IPv4 network", NETS, "::ffff:10.0.0.7",
     ["198.51.100.1"], "198.51.100.1"),
    ("IPv4-mapped peer reported as IPv4", [], "::ffff:203.0.113.7", [], "203.0.113.7"),
    ("ports and brackets in entries", NETS, "10.0.0.1",
     ["[2001:db8:1::5]:4711, 10.0.0.3:80"], "2001:db8:1::5"),
    ("v4 with port", NETS, "10.0.0.1", ["198.51.100.1:1234"], "198.51.100.1"),
    ("garbage ends the walk at the nearest hop", NETS, "10.1.2.3",
     ["198.51.100.1, not-an-ip, 10.0.0.2"], "10.0.0.2"),
    ("garbage as the only entry: the peer", PROXY, "10.0.0.1", ["unknown"], "10.0.0.1"),
    ("garbage left of the client does not matter", PROXY, "10.0.0.1",
     ["<script>, 198.51.100.1"], "198.51.100.1"),
    ("empty entries skipped", PROXY, "10.0.0.1", [" , 198.51.100.1, ", ""], "198.51.100.1"),
    ("a network as an entry is garbage", PROXY, "10.0.0.1", ["10.0.0.0/8"], "10.0.0.1"),
    ("no peer", PROXY, None, ["198.51.100.1"], UNKNOWN),
    ("a peer that is not an address is kept", PROXY, "testclient", [], "testclient"),
]  # fmt: skip


def scope(peer: str | None, forwarded: list[str]) -> dict[str, Any]:
    headers = [(b"host", b"roost")]
    headers += [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded]
    return {
        "type": "http",
        "client": None if peer is None else (peer, 50000),
        "headers": headers,
    }


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_client_ip(
    trusted: list[str], peer: str | None, forwarded: list[str], expected: str
) -> None:
    assert client_ip(scope(peer, forwarded), TrustedProxies(trusted)) == expected


def test_header_names_match_in_any_case() -> None:
    found = scope("10.0.0.1", [])
    found["headers"].append((b"X-Forwarded-For", b"198.51.100.1"))
    assert client_ip(found, TrustedProxies(PROXY)) == "198.51.100.1"


def test_a_long_chain_is_read_only_so_far() -> None:
    forwarded = ", ".join(["198.51.100.1"] + ["10.0.0.2"] * 100)
    assert client_ip(scope("10.0.0.1", [forwarded]), TrustedProxies(NETS)) == "10.0.0.2"


@pytest.mark.parametrize("entry", ["10.0.0.300", "example.com", "10.0.0.0/33", ""])
def test_an_invalid_trusted_proxy_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        TrustedProxies([entry])


def test_trusted_networks_are_parsed_once() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", " 192.168.1.1 ", "2001:db8::/32", "10.1.2.3/8"])
    assert [str(n) for n in proxies.networks] == [
        "10.0.0.0/8",
        "192.168.1.1/32",
        "2001:db8::/32",
        "10.0.0.0/8",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("[::1]:80", "::1"),
        ("[::1]", "::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("1.2.3", None),
        ("[::1", None),
        ("", None),
        ("unknown", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected
