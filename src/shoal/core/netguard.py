"""Which IP addresses a request may connect to: the private-network guard. Pure.

Blocks loopback, private, link-local (169.254.169.254 included), CGNAT, multicast,
reserved, documentation, benchmarking and unspecified addresses, in IPv4 and IPv6,
including IPv4 addresses embedded in IPv6 (mapped ::ffff:a.b.c.d, NAT64, 6to4, Teredo).
An allow-list of networks opens specific ranges.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from shoal.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_BLOCKED = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8",  # this network, unspecified
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # carrier-grade NAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",  # documentation
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
))
_V6_BLOCKED = tuple(ipaddress.IPv6Network(n) for n in (
    "::/128",  # unspecified
    "::1/128",  # loopback
    "::/96",  # IPv4-compatible (deprecated)
    "100::/64",  # discard
    "2001::/23",  # IETF protocol assignments, Teredo
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
))
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def parse_address(text: str) -> IPAddress | None:
    """An IP address from a host string, legacy IPv4 spellings included (``2130706433``,
    ``0177.0.0.1``, ``0x7f.1``, ``127.1``); None when it is a name."""
    text = text.strip("[]").split("%", 1)[0]  # brackets, IPv6 zone
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


class NetGuard:
    """Says whether connecting to an address is allowed, and why not."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        nets = []
        for cidr in allow:
            try:
                nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError as exc:
                raise ConfigError(f"--allow-net {cidr!r} is not a network (CIDR): {exc}"
                                  ) from exc
        self._allow = tuple(nets)

    def why_blocked(self, address: str | IPAddress) -> str | None:
        """None when ``address`` may be connected to, else the reason it may not."""
        ip = parse_address(address) if isinstance(address, str) else address
        if ip is None:
            return f"{address!r} is not an IP address"
        if any(ip.version == n.version and ip in n for n in self._allow):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            embedded = _embedded_v4(ip)
            if embedded is not None:
                reason = self.why_blocked(embedded)
                return None if reason is None else f"{ip} embeds {embedded}: {reason}"
            hit6 = next((n for n in _V6_BLOCKED if ip in n), None)
            return None if hit6 is None else f"{ip} is in {hit6} ({_label(ip)})"
        hit4 = next((n for n in _V4_BLOCKED if ip in n), None)
        return None if hit4 is None else f"{ip} is in {hit4} ({_label(ip)})"


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in n for n in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _label(ip: IPAddress) -> str:
    for name in ("loopback", "link_local", "multicast", "private", "reserved", "unspecified"):
        if getattr(ip, f"is_{name}", False):
            return name.replace("_", "-")
    return "not globally routable"
