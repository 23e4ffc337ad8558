"""The private-network guard's address rules (no network needed)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.netguard import NetGuard, parse_address
from shoal.errors import ConfigError

BLOCKED = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.5.4", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.251", "239.1.1.1", "240.0.0.1",
    "255.255.255.255", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::10.0.0.1",
    "2002:7f00:1::", "2002:a00:1::1", "2001:db8::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "[::1]", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1", "10.1",
    "017700000001",
]
ALLOWED = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111",
           "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert NetGuard().why_blocked(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert NetGuard().why_blocked(address) is None


def test_allow_list_opens_a_range_and_only_it() -> None:
    guard = NetGuard(["127.0.0.0/8", "fd00::/8"])
    assert guard.why_blocked("127.0.0.9") is None
    assert guard.why_blocked("fd00::5") is None
    assert guard.why_blocked("::ffff:127.0.0.1") is None  # the embedded address is allowed
    assert guard.why_blocked("10.0.0.1") is not None
    assert guard.why_blocked("169.254.169.254") is not None


def test_bad_allow_list_entry_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--allow-net 'nope'"):
        NetGuard(["nope"])


def test_names_are_not_addresses() -> None:
    assert parse_address("example.com") is None
    assert parse_address("beef") is None  # hex letters alone are a name, not an address
    assert parse_address("0xbeef") == ipaddress.IPv4Address("0.0.190.239")


@given(st.ip_addresses())
def test_agrees_with_is_global_on_plain_addresses(ip: ipaddress.IPv4Address |
                                                  ipaddress.IPv6Address) -> None:
    blocked = NetGuard().why_blocked(ip) is not None
    mapped = isinstance(ip, ipaddress.IPv6Address) and (
        ip.ipv4_mapped or ip.sixtofour or ip in ipaddress.ip_network("64:ff9b::/96"))
    if not mapped and not ip.is_global:
        assert blocked, ip  # nothing non-global gets through
