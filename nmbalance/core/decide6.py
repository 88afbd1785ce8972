"""IPv6 under ipv6 = "nat66": what differs from IPv4 in an uplink's decision, the
IPv6 contents of the table, and the pieces of the table's contents both families
share. Pure, like decide()."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address, IPv6Network, collapse_addresses
from typing import TYPE_CHECKING, Any

from nmbalance.config.model import Config, Uplink
from nmbalance.core.facts import Facts, GatewaySource, UplinkFacts
from nmbalance.core.ruleset import TableSpec, sticky_sets
from nmbalance.inet import AnyAddress, AnyNetwork

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


def own_addresses(f: UplinkFacts, version: int) -> list[AnyAddress]:
    """The uplink's addresses of one family that name it: for IPv6 the global ones
    (every link has a link-local address of its own)."""
    return [a.ip for a in f.addresses
            if a.version == version and not (version == 6 and a.ip.is_link_local)]


def why_unrouted6(f: UplinkFacts) -> tuple[str, bool]:
    """What keeps the uplink's IPv6 out while it has carrier, and whether it can be
    routed at all: masquerade needs a global address to give the connections."""
    if not own_addresses(f, 6):
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


def collapse(networks: Iterable[AnyNetwork], version: int) -> tuple[str, ...]:
    """The networks of one family (no default route), merged where they touch."""
    # One version only, as collapse_addresses needs; mypy cannot see that from `version`.
    return tuple(str(n) for n in collapse_addresses(  # type: ignore[type-var]
        n for n in networks if n.version == version and n.prefixlen > 0))


def dns_servers(config: Config, per: Mapping[str, Decision], usable: set[str],
                idents: Mapping[str, str], version: int) -> dict[str, str]:
    """Each DNS server of one family -> the ident of the uplink that asks it: only
    uplinks that take traffic, as a dead one's server would be unreachable."""
    out: dict[str, str] = {}
    for u in config.uplink:
        if per[u.name].routed and u.name in usable:
            for addr in per[u.name].facts.dns or tuple(u.dns):
                if addr.version == version and not (version == 6 and addr.is_link_local):
                    out.setdefault(str(addr), idents[u.name])
    return out


def chosen_by_source(config: Config, per: Mapping[str, Decision], idents: Mapping[str, str],
                     main_default: str | None, version: int) -> dict[str, str]:
    """Addresses of routed uplinks whose use says a socket chose that uplink: all but
    those of the main table's default uplink, whose address the kernel gives every
    unbound socket."""
    return {str(a): idents[u.name] for u in config.uplink
            if per[u.name].routed and per[u.name].interface != main_default
            for a in own_addresses(per[u.name].facts, version)}


def contents6(config: Config, facts: Facts, per: Mapping[str, Decision],
              idents: Mapping[str, str], usable: set[str],
              slot_map: Mapping[str, list[tuple[int, int, str]]], spec: TableSpec
              ) -> dict[str, Any]:
    """The IPv6 fields of TableContents (the IPv4 ones' counterparts in _contents)."""
    bypass = local_networks(facts, per, NEVER_BALANCED6)
    masq6 = tuple(d.interface for u in config.uplink
                  if u.masquerade and (d := per[u.name]).facts.present and d.interface)
    live6 = {idents[n] for n in usable}
    dead6 = tuple(sorted(name for name, owner in sticky_sets(spec, 6).items()
                         if owner not in live6))
    return {"weights6": dict(slot_map), "bypass6": collapse(bypass, 6),
            "dns6": dns_servers(config, per, usable, idents, 6),
            "source6": chosen_by_source(config, per, idents, facts.main_default6, 6),
            "masquerade6": masq6, "dead_sticky_sets6": dead6}
