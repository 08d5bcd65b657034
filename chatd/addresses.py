"""Peer addresses and ranges, written one way: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is
plain IPv4. What a ban or a kick by IP matches, and what per-address limits count.

A dual-stack listener reports IPv4 clients as `::ffff:1.2.3.4`. chatd turns
that into `1.2.3.4` at accept time and in ban and kick targets, so one person
has one address in sessions, logs, bans and limits, and an IPv4 range covers
the mapped form. An IPv6 client gets a /64 (one customer's share) as its
group for per-address limits.
"""

import ipaddress
from functools import lru_cache

MAPPED = ipaddress.ip_network("::ffff:0:0/96")
IPV6_GROUP_PREFIX = 64


@lru_cache(maxsize=4096)     # every login asks several times about the same few addresses
def parse_address(text):
    """The ip_address of `text` (a mapped IPv6 address as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except (ValueError, AttributeError):
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def plain_address(text):
    """`text` as chatd writes it: '::ffff:1.2.3.4' -> '1.2.3.4'; not an address: unchanged."""
    address = parse_address(text)
    return text if address is None else str(address)


def parse_network(text):
    """An ip_network for an address or CIDR range, or None (a user name, say).

    A range inside ::ffff:0:0/96 is the IPv4 range it maps, so banning
    '::ffff:127.0.0.0/104' is banning '127.0.0.0/8'.
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except (ValueError, AttributeError):
        return None
    if network.version == 6 and network.subnet_of(MAPPED):
        return ipaddress.ip_network(
            (network.network_address.ipv4_mapped, network.prefixlen - MAPPED.prefixlen))
    return network


def network_label(network):
    """'203.0.113.7' for a single address, '203.0.113.0/24' for a range."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def in_network(ip, network):
    """True if the peer address `ip` is in `network` (an IPv6 range covers mapped IPv4)."""
    address = parse_address(ip) if ip else None
    if address is None:
        return False
    if address.version == 4 and network.version == 6:
        address = ipaddress.IPv6Address(int(MAPPED.network_address) | int(address))
    return address.version == network.version and address in network


@lru_cache(maxsize=4096)
def address_group(ip):
    """The key per-address limits count by: the IPv4 address, or the IPv6 /64."""
    address = parse_address(ip)
    if address is None:
        return ip
    if address.version == 4:
        return str(address)
    return str(ipaddress.ip_network((address, IPV6_GROUP_PREFIX), strict=False))
