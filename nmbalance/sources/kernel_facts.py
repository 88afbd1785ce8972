"""Facts from the kernel over netlink: links, addresses and routes.

A gateway is taken only from a default route that really exists on the
uplink's interface (any table, never one of ours); a point-to-point device
needs none. Otherwise the uplink is reported without a gateway, with the
reason: never a guess from the subnet.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_interface,
    ip_network,
)
from typing import Any

from pyroute2 import IPRoute

from nmbalance.config.model import Config, Lan
from nmbalance.core.facts import Facts, GatewaySource, LanFacts, UplinkFacts
from nmbalance.core.plan import MAIN_TABLE
from nmbalance.inet import AnyInterface, AnyNetwork

IFF_UP = 0x1
IFF_POINTOPOINT = 0x10
IFF_LOWER_UP = 0x10000
ARPHRD_PPP = 512
ARPHRD_NONE = 0xFFFE  # tun, wwan raw-ip
RTN_UNICAST = 1


@dataclass(frozen=True)
class KernelLink:
    index: int
    name: str
    flags: int
    link_type: int

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def carrier(self) -> bool:
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)

    @property
    def point_to_point(self) -> bool:
        return bool(self.flags & IFF_POINTOPOINT) or self.link_type in (ARPHRD_PPP, ARPHRD_NONE)


@dataclass(frozen=True)
class KernelRoute:
    table: int
    dst: AnyNetwork
    gateway: str | None
    oif: int | None
    proto: int
    kind: int
    metric: int


def _table(msg: Any) -> int:
    return int(msg.get_attr("RTA_TABLE") or msg["table"])


def read_links(ipr: IPRoute) -> dict[int, KernelLink]:
    return {
        m["index"]: KernelLink(m["index"], m.get_attr("IFLA_IFNAME"), m["flags"], m["ifi_type"])
        for m in ipr.get_links()
    }


@dataclass(frozen=True)
class KernelAddress:
    interface: AnyInterface
    label: str = ""  # IPv4 only: "eth3:0" for an alias, else the device's name
    peer: IPv4Address | None = None  # the far end of a point-to-point link


def read_addresses(ipr: IPRoute) -> dict[int, list[KernelAddress]]:
    out: dict[int, list[KernelAddress]] = {}
    for m in ipr.get_addr():
        peer = None
        if m["family"] == socket.AF_INET6:
            addr = m.get_attr("IFA_ADDRESS")
        else:
            addr = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
            remote = m.get_attr("IFA_ADDRESS")
            peer = IPv4Address(remote) if remote and remote != addr else None
        if addr:
            out.setdefault(m["index"], []).append(KernelAddress(
                ip_interface(f"{addr}/{m['prefixlen']}"), m.get_attr("IFA_LABEL") or "", peer))
    return out


def lan_prefixes(lan: Lan, link: KernelLink | None,
                 addresses: Mapping[int, list[KernelAddress]]) -> tuple[AnyNetwork, ...]:
    """A LAN's prefixes: for "eth3:0" the addresses labelled so; for "eth3" those of
    the device except its aliases' (IPv6 addresses carry no label)."""
    if link is None:
        return ()
    return tuple(a.interface.network for a in addresses.get(link.index, [])
                 if a.label in ("", lan.interface)
                 or (":" not in lan.interface and ":" not in a.label))


def read_routes(ipr: IPRoute, family: int = socket.AF_INET) -> list[KernelRoute]:
    zero = "0.0.0.0" if family == socket.AF_INET else "::"
    routes = []
    for m in ipr.route("dump", family=family):
        dst = m.get_attr("RTA_DST") or zero
        routes.append(KernelRoute(
            table=_table(m),
            dst=ip_network(f"{dst}/{m['dst_len']}", strict=False),
            gateway=m.get_attr("RTA_GATEWAY"),
            oif=m.get_attr("RTA_OIF"),
            proto=m["proto"],
            kind=m["type"],
            metric=m.get_attr("RTA_PRIORITY") or 0,
        ))
    return routes


def _default_via(link: KernelLink, routes: Iterable[KernelRoute], own_proto: int,
                 version: int) -> str | None:
    """The next hop of a default route of that family on `link` (never one of
    ours): main table first, then the lowest metric."""
    candidates = sorted(
        (r for r in routes
         if r.dst.prefixlen == 0 and r.dst.version == version and r.oif == link.index
         and r.gateway and r.proto != own_proto and r.kind == RTN_UNICAST),
        key=lambda r: (r.table != MAIN_TABLE, r.metric, r.table),
    )
    return candidates[0].gateway if candidates else None


def find_gateway6(link: KernelLink, routes: Iterable[KernelRoute], own_proto: int
                  ) -> IPv6Address | None:
    """An IPv6 default route's next hop on `link`: from a router advertisement, DHCPv6
    or a static route; link-local as a rule, so it names a router only with `link`."""
    via = _default_via(link, routes, own_proto, 6)
    return IPv6Address(via) if via else None


def find_gateway(
    link: KernelLink, routes: Iterable[KernelRoute], own_proto: int
) -> tuple[IPv4Address | None, str]:
    """The next hop of a default route on `link`; main table first, then lowest metric."""
    via = _default_via(link, routes, own_proto, 4)
    if via:
        return IPv4Address(via), ""
    return None, (
        f"no default route via {link.name} in any table; set gateway = \"ADDRESS\" "
        "or let NetworkManager/networkd configure the interface"
    )


def snapshot(ipr: IPRoute, config: Config, interfaces: Mapping[str, str] | None = None) -> Facts:
    """`interfaces`: uplink name -> interface, for uplinks named by connection."""
    return facts_from(config, read_links(ipr), read_addresses(ipr),
                      read_routes(ipr) + read_routes(ipr, socket.AF_INET6), interfaces or {})


def facts_from(
    config: Config,
    links: dict[int, KernelLink],
    addresses: Mapping[int, list[KernelAddress]],
    routes: list[KernelRoute],
    interfaces: Mapping[str, str] | None = None,
) -> Facts:
    by_name = {link.name: link for link in links.values()}
    own = config.kernel.route_protocol
    uplinks = []
    for u in config.uplink:
        iface = (interfaces or {}).get(u.name) or u.interface
        link = by_name.get(iface or "")
        if link is None:
            why = (f"interface {iface} not found" if iface
                   else f"connection {u.connection!r} is not active in NetworkManager")
            uplinks.append(UplinkFacts(name=u.name, interface=iface, gateway_reason=why))
            continue
        gateway, reason = (None, "") if link.point_to_point else find_gateway(link, routes, own)
        static6 = u.gateway6 if isinstance(u.gateway6, IPv6Address) else None
        gateway6 = static6 or find_gateway6(link, routes, own)
        uplinks.append(UplinkFacts(
            name=u.name,
            interface=link.name,
            present=True,
            up=link.up,
            carrier=link.carrier,
            point_to_point=link.point_to_point,
            addresses=tuple(a.interface for a in addresses.get(link.index, [])
                            if isinstance(a.interface, IPv4Interface | IPv6Interface)),
            peer=next((a.peer for a in addresses.get(link.index, []) if a.peer), None),
            gateway=gateway,
            gateway_source=GatewaySource.KERNEL if gateway else GatewaySource.NONE,
            gateway_reason=reason,
            dns=tuple(u.dns),
            gateway6=gateway6,
            gateway6_source=GatewaySource.STATIC if static6 else (
                GatewaySource.KERNEL if gateway6 else GatewaySource.NONE),
        ))
    lans = []
    for lan in config.lan:
        link = by_name.get(lan.device)
        lans.append(LanFacts(lan.name, lan.interface, link is not None,
                             lan_prefixes(lan, link, addresses)))
    connected = [a.interface.network for addrs in addresses.values() for a in addrs]
    main_specific = [
        r.dst for r in routes
        if r.table == MAIN_TABLE and r.dst.prefixlen > 0 and r.proto != own
        and r.kind == RTN_UNICAST
    ]

    def main_default(version: int) -> str | None:
        defaults = sorted((r.metric, links[r.oif].name) for r in routes
                          if r.table == MAIN_TABLE and r.dst.prefixlen == 0 and r.proto != own
                          and r.kind == RTN_UNICAST and r.oif in links
                          and r.dst.version == version)
        return defaults[0][1] if defaults else None

    return Facts(uplinks=tuple(uplinks), lans=tuple(lans), bypass=tuple(connected + main_specific),
                 links=frozenset(by_name), main_default=main_default(4),
                 main_default6=main_default(6))
