"""NetworkManager over D-Bus: each device's state, gateway, DHCP lease and
connection.

The gateway comes from the device's IP4Config (NetworkManager's own default
route) or, for a connection with never-default (a second uplink usually is
one), from the DHCP lease's `routers` option: precise either way, never a
guess. The DHCP4Config object changes with each activation, so everything is
re-read from the device on every refresh.
"""

from __future__ import annotations

import logging
import re
from ipaddress import IPv6Address
from typing import Any

from nmbalance.bus.client import BusCallError, call, get_all
from nmbalance.bus.compat import Message, MessageBus
from nmbalance.core.facts import GatewaySource, ManagedLink
from nmbalance.inet import AnyAddress
from nmbalance.sources import validate

log = logging.getLogger(__name__)

NAME = "org.freedesktop.NetworkManager"
PATH = "/org/freedesktop/NetworkManager"
DEVICE = f"{NAME}.Device"
IP4CONFIG = f"{NAME}.IP4Config"
IP6CONFIG = f"{NAME}.IP6Config"
DHCP4CONFIG = f"{NAME}.DHCP4Config"
ACTIVE = f"{NAME}.Connection.Active"
# NMDeviceState; unknown values are shown by number rather than refused.
DEVICE_STATES = {
    0: "unknown", 10: "unmanaged", 20: "unavailable", 30: "disconnected", 40: "prepare",
    50: "config", 60: "need-auth", 70: "ip-config", 80: "ip-check", 90: "secondaries",
    100: "activated", 110: "deactivating", 120: "failed",
}
MATCHES: tuple[str, ...] = (f"type='signal',sender='{NAME}'",)
SIGNALS = frozenset({"StateChanged", "DeviceAdded", "DeviceRemoved", "InterfacesAdded",
                     "InterfacesRemoved"})
# The properties whose change we re-read for, by interface.
RELEVANT = {
    NAME: frozenset({"Devices", "ActiveConnections"}),
    DEVICE: frozenset({"State", "Ip4Config", "Dhcp4Config", "Ip6Config", "ActiveConnection",
                       "IpInterface", "Interface"}),
    f"{DEVICE}.Wired": frozenset({"Carrier"}),
    IP4CONFIG: frozenset({"Gateway", "AddressData", "NameserverData", "RouteData"}),
    IP6CONFIG: frozenset({"Gateway", "Nameservers"}),
    DHCP4CONFIG: frozenset({"Options"}),
    ACTIVE: frozenset({"State", "Ip4Config", "Dhcp4Config", "Devices"}),
}


def device_state(value: Any) -> str:
    """Known states by name, other numbers as "state-N"; anything else is "unknown"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return DEVICE_STATES.get(value, f"state-{value}")
    return "unknown"


_OBJECT_PATH = re.compile(r"(/[A-Za-z0-9_]+)+")


def _object(path: Any) -> str | None:
    """A D-Bus object path (what NetworkManager's "/" means: none)."""
    if isinstance(path, str) and len(path) <= 512 and _OBJECT_PATH.fullmatch(path):
        return path
    return None


def routers(options: Any) -> AnyAddress | None:
    """The first router of a lease's `routers` option ("10.0.0.1 10.0.0.2")."""
    return validate.first_ipv4(validate.mapping(options, "DHCP options").get("routers"),
                               "DHCP router")


def nameservers(ip4: dict[str, Any], ip6: dict[str, Any] | None = None
                ) -> tuple[AnyAddress, ...]:
    """IPv4 servers from IP4Config's NameserverData; IPv6 ones from IP6Config's
    Nameservers, arrays of 16 bytes (NetworkManager 1.42 has no NameserverData there)."""
    six = [validate.address(list(raw) if isinstance(raw, bytes | bytearray) else raw,
                            "IPv6 DNS server")
           for raw in validate.items((ip6 or {}).get("Nameservers"), "IPv6 DNS servers")]
    return validate.addresses(ip4.get("NameserverData"), "address", "DNS server") + tuple(
        a for a in six if isinstance(a, IPv6Address))


class NetworkManagerSource:
    name = NAME
    manager = GatewaySource.NETWORKMANAGER
    matches = MATCHES

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    def wants(self, msg: Message) -> bool:
        """Only what can change a gateway, an address, a state or a device: Wi-Fi
        signal strength and the like change every few seconds and mean nothing here."""
        if not (msg.sender and msg.path is not None and msg.path.startswith(PATH)):
            return False
        if msg.member != "PropertiesChanged":
            return msg.member in SIGNALS
        # org.freedesktop.DBus.Properties carries (interface, changed, invalidated).
        interface, changed = (msg.body[0], msg.body[1]) if len(msg.body) >= 2 else ("", {})
        if not isinstance(interface, str) or not isinstance(changed, dict):
            return False
        return bool(RELEVANT.get(interface, frozenset()) & changed.keys())

    async def _props(self, path: str | None, interface: str) -> dict[str, Any]:
        if path is None:
            return {}
        try:
            return validate.mapping(await get_all(self.bus, NAME, path, interface),
                                    f"{interface} properties")
        except BusCallError as exc:  # the object went away between reads
            log.debug("NetworkManager %s %s: %s", path, interface, exc)
            return {}

    async def snapshot(self) -> dict[str, ManagedLink]:
        body = await call(self.bus, NAME, PATH, NAME, "GetDevices")
        links: dict[str, ManagedLink] = {}
        for path in validate.items(body[0] if body else None, "NetworkManager devices"):
            if _object(path) is None:
                continue
            link = await self._device(path)
            if link is not None:
                links[link.interface] = link
        return links

    async def _device(self, path: str) -> ManagedLink | None:
        dev = await self._props(path, DEVICE)
        iface = validate.ifname(dev.get("IpInterface")) or validate.ifname(dev.get("Interface"))
        state = device_state(dev.get("State"))
        if iface is None or state == "unmanaged":
            return None  # someone else's device: NetworkManager has nothing to say about it
        ip4 = await self._props(_object(dev.get("Ip4Config")), IP4CONFIG)
        dhcp = await self._props(_object(dev.get("Dhcp4Config")), DHCP4CONFIG)
        active = await self._props(_object(dev.get("ActiveConnection")), ACTIVE)
        ip6 = await self._props(_object(dev.get("Ip6Config")), IP6CONFIG)
        gateway = validate.address(ip4.get("Gateway"), "gateway")
        source = GatewaySource.NETWORKMANAGER
        if gateway is None:
            gateway = routers(dhcp.get("Options"))
            source = GatewaySource.DHCP
        return ManagedLink(
            interface=iface,
            manager=self.manager,
            state=state,
            gateway=gateway,
            gateway_source=source if gateway is not None else GatewaySource.NONE,
            dns=nameservers(ip4, ip6),
            gateway6=validate.address(ip6.get("Gateway"), "IPv6 gateway"),
            connection_id=validate.text(active.get("Id")),
            connection_uuid=validate.text(active.get("Uuid"), 64),
        )
