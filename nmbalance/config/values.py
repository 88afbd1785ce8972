"""The values nmbalance takes in, checked the same way wherever they come from:
the config, D-Bus properties, lease files. What passes is a plain address,
prefix, name or number: nothing that could reach nft text as anything else.

Python's ipaddress keeps whatever follows a `%` as an IPv6 scope id, so a
"valid" address can carry spaces, braces and newlines; these checks refuse
scope ids outright, and addresses no uplink can use as a gateway, DNS
server or probe target (unspecified, loopback, multicast, broadcast).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Annotated

from pydantic import BeforeValidator

from nmbalance.inet import AnyAddress, AnyNetwork

MAX_ADDRESS_TEXT = 64  # far more than any address or prefix written out needs


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what} as a string (got {type(value).__name__})")
    if len(value) > MAX_ADDRESS_TEXT:
        raise ValueError(f"{what} is too long to be one")
    if "%" in value:
        raise ValueError(f"{what} {value!r} has a scope id (%...): give the address alone")
    return value.strip()


def usable_address(value: object, what: str = "an address") -> AnyAddress:
    """A unicast address an uplink can send to, from text (or already parsed)."""
    if isinstance(value, IPv4Address | IPv6Address):
        addr: AnyAddress = value
        if isinstance(addr, IPv6Address) and addr.scope_id:
            raise ValueError(f"{what} {addr} has a scope id (%...): give the address alone")
    else:
        text = _text(value, what)
        try:
            addr = ip_address(text)
        except ValueError:
            raise ValueError(f"{what} {text!r} is not an IPv4 or IPv6 address") from None
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or (
            isinstance(addr, IPv4Address) and addr == IPv4Address("255.255.255.255")):
        raise ValueError(f"{what} {addr} is not a unicast address an uplink can use")
    return addr


def ipv4_only(addr: AnyAddress, what: str) -> IPv4Address:
    if not isinstance(addr, IPv4Address):
        raise ValueError(f"{what} {addr} is IPv6 and this field takes IPv4 (IPv6 has "
                         "gateway6 and IPv6 probe targets, with ipv6 = \"nat66\")")
    return addr


def usable_ipv4(value: object, what: str = "an address") -> IPv4Address:
    return ipv4_only(usable_address(value, what), what)


def usable_ipv6(value: object, what: str = "an address") -> IPv6Address:
    """An IPv6 unicast address; link-local too (an uplink's interface is its scope)."""
    addr = usable_address(value, what)
    if not isinstance(addr, IPv6Address):
        raise ValueError(f"{what} {addr} is IPv4: `gateway` is the IPv4 one")
    return addr


def network(value: object, what: str = "a prefix") -> AnyNetwork:
    """A prefix without host bits set ("192.0.2.1/24" is almost always a typo)."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    text = _text(value, what)
    try:
        return ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{what} {text!r}: {exc}") from None


def ipv4_network(value: object, what: str = "a prefix") -> IPv4Network:
    net = network(value, what)
    if not isinstance(net, IPv4Network):
        raise ValueError(f"{what} {net} is IPv6 and this field takes IPv4 (IPv6 has "
                         "gateway6 and IPv6 probe targets, with ipv6 = \"nat66\")")
    return net


def translatable_ipv6(value: object, what: str = "prefix6") -> IPv6Network:
    """An IPv6 prefix an ISP routes to us, for prefix translation: unicast, neither
    link-local nor multicast, and no longer than /64 (what a LAN prefix is)."""
    net = network(value, what)
    if not isinstance(net, IPv6Network):
        raise ValueError(f"{what} {net} is IPv4: it takes the IPv6 prefix the ISP routes "
                         "to this router")
    if net.is_link_local or net.is_multicast or net.is_loopback or net.prefixlen == 0:
        raise ValueError(f"{what} {net} is not a unicast prefix an ISP can route to us")
    if net.prefixlen > 64:
        raise ValueError(f"{what} {net} is longer than /64: a LAN's prefix cannot be "
                         "translated into it")
    return net


def _checked(check: Callable[[object, str], object], what: str) -> BeforeValidator:
    return BeforeValidator(lambda value: check(value, what))


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
GATEWAY_TARGET = "gateway"  # a probe target: the uplink's gateway, whatever it is now


def host_name(value: str, what: str = "a host name") -> str:
    """A DNS name with at least two labels (a single label would go through search
    domains, which an uplink's own resolver does not share); lower-cased, no final dot."""
    name = value.strip().rstrip(".").lower()
    labels = name.split(".")
    if (len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels)
            or labels[-1].isdigit()):
        raise ValueError(f"{what} {value!r} is not an IPv4 address or a host name like "
                         "\"ping.example.net\"")
    return name


def probe_target(value: object, what: str = "probe target") -> AnyAddress | str:
    """An IPv4 or IPv6 address (IPv6 needs an ipv6 mode: the config's cross-check),
    a host name (resolved to IPv4 through the uplink's own DNS), or "gateway"
    (the IPv4 one)."""
    if isinstance(value, str):
        text = _text(value, what)
        if text.lower() == GATEWAY_TARGET:
            return GATEWAY_TARGET
        # Digits and dots only is an address, however mistyped, never a name.
        if not re.fullmatch(r"[0-9.]*", text) and ":" not in text:
            return host_name(text, what)
    addr = usable_address(value, what)
    if isinstance(addr, IPv6Address) and addr.is_link_local:
        raise ValueError(f"{what} {addr} is link-local: probe a global address, whose "
                         "answer comes back through the uplink's own table")
    return addr


# Field types: pydantic runs the check first, then holds the parsed value.
GatewayAddress = Annotated[IPv4Address, _checked(usable_ipv4, "gateway")]
Gateway6Address = Annotated[IPv6Address, _checked(usable_ipv6, "gateway6")]
ProbeTarget = Annotated[IPv4Address | IPv6Address | str, _checked(probe_target, "probe target")]
DnsServer = Annotated[IPv4Address, _checked(usable_ipv4, "DNS server")]
LanHost = Annotated[IPv4Address, _checked(usable_ipv4, "LAN host")]
Prefix = Annotated[IPv4Network, _checked(ipv4_network, "prefix")]
Prefix6 = Annotated[IPv6Network, _checked(translatable_ipv6, "prefix6")]
AnyPrefix = Annotated[IPv4Network | IPv6Network, _checked(network, "prefix")]


def printable(value: str, what: str) -> str:
    """No control characters (newlines, NUL, escapes): they would break a log line,
    a header or the TOML `convert` writes."""
    if not value.isprintable():
        raise ValueError(f"{what} holds a control character")
    return value
