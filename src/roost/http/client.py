"""Who is calling: the client's IP address, through trusted reverse proxies.

The peer of the TCP connection is the client, unless the peer is a trusted proxy
(``Settings.trusted_proxies``). Then ``X-Forwarded-For`` is read from the right, the end
each proxy appends to: trusted hops are skipped and the first untrusted address is the
client. Entries left of it were written by the client and are never believed, and an
``X-Forwarded-For`` sent by an untrusted peer is ignored. An entry that is not an address
ends the walk (nothing to its left can be attributed); the nearest hop then stands.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"
"""The client of a connection without a peer address (a Unix socket, some test clients)."""
MAX_HOPS = 32
"""Most ``X-Forwarded-For`` entries read; a longer chain stops at the last one read."""


def parse_address(text: str) -> IPAddress | None:
    """An address as found in a peer or forwarded entry (``[v6]:port`` and ``v4:port`` too).

    IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, from dual-stack sockets) become IPv4.
    """
    text = text.strip()
    if text.startswith("["):
        text, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The parsed ``trusted_proxies`` setting: addresses and networks, IPv4 and IPv6."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is neither an IP address nor a network"
                ) from None
        self.networks: tuple[IPNetwork, ...] = tuple(networks)

    def __contains__(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def client_ip(self, scope: Scope) -> str:
        """The client's address for this HTTP or WebSocket scope (see the module docstring)."""
        peer = scope.get("client")
        if not peer:
            return UNKNOWN
        host = str(peer[0])
        address = parse_address(host)
        if address is None:
            return host
        if not self.networks or address not in self:
            return str(address)
        for entry in reversed(forwarded_for(scope)[-MAX_HOPS:]):
            hop = parse_address(entry)
            if hop is None:
                break
            address = hop
            if hop not in self:
                break
        return str(address)


def forwarded_for(scope: Scope) -> list[str]:
    """Every ``X-Forwarded-For`` entry in order, across repeated headers, empties dropped."""
    entries: list[str] = []
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-forwarded-for":
            text = value.decode("latin-1")
            entries.extend(part.strip() for part in text.split(",") if part.strip())
    return entries


def client_ip(scope: Scope, trusted_proxies: TrustedProxies) -> str:
    """The client's address: the peer, or the forwarded address when the peer is trusted."""
    return trusted_proxies.client_ip(scope)
