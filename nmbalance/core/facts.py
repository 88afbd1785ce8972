"""An immutable snapshot of what is true now, as the sources saw it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nmbalance.inet import AnyAddress, AnyInterface, AnyNetwork


class Health(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


class GatewaySource(StrEnum):
    STATIC = "static"
    KERNEL = "kernel"
    DEVICE = "device"  # point-to-point: the device route serves, no next hop
    NETWORKMANAGER = "networkmanager"
    NETWORKD = "networkd"
    DHCP = "dhcp"
    NONE = "none"


@dataclass(frozen=True)
class UplinkFacts:
    name: str
    interface: str | None = None
    present: bool = False
    up: bool = True  # administratively (IFF_UP); when not, the kernel takes no routes via it
    carrier: bool = False  # up and the lower layer too (IFF_LOWER_UP)
    point_to_point: bool = False
    peer: AnyAddress | None = None  # the far end of a point-to-point link
    addresses: tuple[AnyInterface, ...] = ()
    gateway: AnyAddress | None = None
    gateway_source: GatewaySource = GatewaySource.NONE
    gateway_reason: str = ""
    dns: tuple[AnyAddress, ...] = ()
    # IPv6: the next hop of its default route (usually link-local: it is only
    # meaningful with `interface`), and where that came from.
    gateway6: AnyAddress | None = None
    gateway6_source: GatewaySource = GatewaySource.NONE
    health: Health = Health.UP
    health_reason: str = ""
    # IPv6's own health (ipv6 = "nat66"): from its IPv6 probe targets, apart from IPv4's.
    health6: Health = Health.UP
    health6_reason: str = ""


@dataclass(frozen=True)
class LanFacts:
    name: str
    interface: str
    present: bool = False
    prefixes: tuple[AnyNetwork, ...] = ()


@dataclass(frozen=True)
class Facts:
    uplinks: tuple[UplinkFacts, ...] = ()
    lans: tuple[LanFacts, ...] = ()
    links: frozenset[str] = frozenset()  # every interface present
    # Connected networks and non-default routes of the main table: never balanced.
    bypass: tuple[AnyNetwork, ...] = ()
    # The interface of the main table's preferred default route: the kernel gives an
    # unbound socket that interface's address, so only other uplinks' addresses say
    # that a socket chose its uplink by binding to it.
    main_default: str | None = None
    main_default6: str | None = None  # the same for IPv6

    def uplink(self, name: str) -> UplinkFacts:
        for facts in self.uplinks:
            if facts.name == name:
                return facts
        return UplinkFacts(name=name)


@dataclass(frozen=True)
class ManagedLink:
    """What a network manager (NetworkManager, networkd) says about one interface."""

    interface: str
    manager: GatewaySource  # NETWORKMANAGER or NETWORKD
    state: str
    gateway: AnyAddress | None = None
    gateway_source: GatewaySource = GatewaySource.NONE
    dns: tuple[AnyAddress, ...] = ()
    gateway6: AnyAddress | None = None  # its IPv6 next hop (on `interface`)
    connection_id: str | None = None
    connection_uuid: str | None = None
