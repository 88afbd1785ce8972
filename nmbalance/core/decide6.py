"""IPv6 under ipv6 = "nat66" and "npt": what differs from IPv4 in an uplink's
decision, the IPv6 contents of the table (npt's prefix translations among them),
and the pieces of the table's contents both families share. Pure, like decide()."""

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


Translation = tuple[IPv6Network, IPv6Network]  # (a LAN's prefix, what it leaves as)


def lan_prefixes6(config: Config, facts: Facts) -> list[IPv6Network]:
    """The LANs' own IPv6 prefixes (not link-local), LAN by LAN in config order."""
    out: list[IPv6Network] = []
    for lan in config.lan:
        for f in facts.lans:
            if f.name == lan.name:
                out += sorted(p for p in f.prefixes
                              if isinstance(p, IPv6Network) and not p.is_link_local)
    return out


def translations(prefix6: IPv6Network, lans: Iterable[IPv6Network]
                 ) -> tuple[list[Translation], list[IPv6Network]]:
    """npt: each LAN prefix -> a block of its own length in `prefix6`, packed in
    order, so one LAN /64 onto a delegated /56 takes its first /64; and the LAN
    prefixes that do not fit (longer than prefix6 allows, or no block left)."""
    placed: list[Translation] = []
    left: list[IPv6Network] = []
    cursor = 0  # the offset into prefix6 of the next free address
    for lan in lans:
        size = lan.num_addresses
        start = -(-cursor // size) * size  # aligned to its own length
        if lan.prefixlen < prefix6.prefixlen or start + size > prefix6.num_addresses:
            left.append(lan)
            continue
        placed.append((lan, IPv6Network((int(prefix6.network_address) + start,
                                         lan.prefixlen))))
        cursor = start + size
    return placed, left


def npt_contents(config: Config, facts: Facts, per: Mapping[str, Decision],
                 idents: Mapping[str, str], warnings: list[str]) -> dict[str, Any]:
    """npt's fields of TableContents: which uplink devices translate, and each
    uplink's translations out (LAN -> its prefix6) and back in."""
    lans = lan_prefixes6(config, facts)
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    devices: dict[str, str] = {}
    for u in config.uplink:
        d = per[u.name]
        if u.prefix6 is None or not (d.facts.present and d.interface):
            continue
        placed, left = translations(u.prefix6, lans)
        if left:
            warnings.append(f"uplink {u.name!r}: LAN prefix {', '.join(map(str, left))} does "
                            f"not fit in its prefix6 {u.prefix6}: masqueraded instead")
        out[idents[u.name]] = tuple((str(lan), str(wan)) for lan, wan in placed)
        devices[d.interface] = idents[u.name]
    return {"npt6": out, "npt6_devices": devices}


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
