"""IPv6 under ipv6 = "nat66": what differs from IPv4 in an uplink's decision, and
the IPv6 contents of the table. Pure, like decide()."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address, IPv6Network, collapse_addresses
from typing import TYPE_CHECKING, Any

from nmbalance.config.model import Config, Uplink
from nmbalance.core.facts import Facts, GatewaySource, UplinkFacts
from nmbalance.core.ruleset import STICKY6_PREFIX, TableSpec, sticky_sets
from nmbalance.inet import AnyNetwork

if TYPE_CHECKING:
    from nmbalance.core.decide import Decision

# Never balanced: link-local (every link has its own) and multicast (neighbour
# discovery, DHCPv6, mDNS), whichever way they go.
NEVER_BALANCED6 = (IPv6Network("fe80::/10"), IPv6Network("ff00::/8"))


def gateway6(u: Uplink, f: UplinkFacts) -> tuple[str | None, str]:
    """The uplink's IPv6 next hop and where it came from."""
    if isinstance(u.gateway6, IPv6Address):
        return str(u.gateway6), GatewaySource.STATIC.value
    if f.gateway6 is not None:
        return str(f.gateway6), f.gateway6_source.value
    if f.point_to_point:
        return None, GatewaySource.DEVICE.value
    return None, GatewaySource.NONE.value


def global6(f: UplinkFacts) -> list[IPv6Address]:
    return [a.ip for a in f.addresses
            if isinstance(a.ip, IPv6Address) and not a.ip.is_link_local]


def why_unrouted6(f: UplinkFacts, gateway: str | None) -> tuple[str, bool]:
    """What keeps the uplink's IPv6 out while it has carrier, and whether it can be
    routed at all: masquerade needs a global address to give the connections."""
    if not global6(f):
        return "no global IPv6 address", False
    return "no IPv6 default route", True


def local_networks(facts: Facts, per: Mapping[str, Decision],
                   more: Iterable[AnyNetwork]) -> list[AnyNetwork]:
    """What is never balanced, either family: the main table's connected networks and
    specific routes, the LANs' and the uplinks' own networks, and `more`."""
    out: list[AnyNetwork] = [*facts.bypass, *more]
    for lan in facts.lans:
        out += lan.prefixes
    for d in per.values():
        out += [a.network for a in d.facts.addresses]
    return out


def _collapse6(networks: list[AnyNetwork]) -> tuple[str, ...]:
    v6 = [n for n in networks if isinstance(n, IPv6Network) and n.prefixlen > 0]
    return tuple(str(n) for n in collapse_addresses(v6))


def contents6(config: Config, facts: Facts, per: Mapping[str, Decision],
              idents: Mapping[str, str], usable: set[str],
              slot_map: Mapping[str, list[tuple[int, int, str]]], spec: TableSpec
              ) -> dict[str, Any]:
    """The IPv6 fields of TableContents (the IPv4 ones' counterparts in _contents)."""
    bypass = local_networks(facts, per, NEVER_BALANCED6)
    dns6: dict[str, str] = {}
    for u in config.uplink:
        if per[u.name].routed and u.name in usable:
            for addr in per[u.name].facts.dns:
                if isinstance(addr, IPv6Address) and not addr.is_link_local:
                    dns6.setdefault(str(addr), idents[u.name])
    # As for IPv4: the main table's default uplink gives unbound sockets its address.
    source6 = {str(a): idents[u.name] for u in config.uplink
               if per[u.name].routed and per[u.name].interface != facts.main_default6
               for a in global6(per[u.name].facts)}
    masq6 = tuple(d.interface for u in config.uplink
                  if u.masquerade and (d := per[u.name]).facts.present and d.interface)
    live6 = {idents[n] for n in usable}
    dead6 = tuple(sorted(name for name, owner in sticky_sets(spec).items()
                         if name.startswith(STICKY6_PREFIX) and owner not in live6))
    return {"weights6": dict(slot_map), "bypass6": _collapse6(bypass), "dns6": dns6,
            "source6": source6, "masquerade6": masq6, "dead_sticky_sets6": dead6}
