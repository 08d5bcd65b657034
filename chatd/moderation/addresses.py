"""Addresses and ranges: what a ban or a kick by IP matches."""

import ipaddress


def parse_network(text):
    """An ip_network for an address or CIDR range (IPv4 or IPv6), or None for a user name."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def parse_address(text):
    """The peer address as an ip_address (IPv4-mapped IPv6 seen as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def network_label(network):
    """'203.0.113.7' for a single address, '203.0.113.0/24' for a range."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def in_network(ip, network):
    address = parse_address(ip) if ip else None
    return address is not None and address.version == network.version and address in network
