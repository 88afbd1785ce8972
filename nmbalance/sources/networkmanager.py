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
DHCP4CONFIG = f"{NAME}.DHCP4Config"
ACTIVE = f"{NAME}.Connection.Active"
# NMDeviceState; unknown values are shown by number rather than refused.
DEVICE_STATES = {
    0: "unknown", 10: "unmanaged", 20: "unavailable", 30: "disconnected", 40: "prepare",
    50: "config", 60: "need-auth", 70: "ip-config", 80: "ip-check", 90: "secondaries",
    100: "activated", 110: "deactivating", 120: "failed",
}
MATCHES: tuple[str, ...] = (f"type='signal',sender='{NAME}'",)


def device_state(value: Any) -> str:
    if isinstance(value, int) and value in DEVICE_STATES:
        return DEVICE_STATES[value]
    return f"state-{value}"


def _object(path: Any) -> str | None:
    return path if isinstance(path, str) and path.startswith("/") and path != "/" else None


def routers(options: dict[str, Any]) -> AnyAddress | None:
    """The first router of a lease's `routers` option ("10.0.0.1 10.0.0.2")."""
    return validate.first_ipv4(options.get("routers"), "DHCP router")


def nameservers(ip4: dict[str, Any]) -> tuple[AnyAddress, ...]:
    return validate.addresses(ip4.get("NameserverData"), "address", "DNS server")


class NetworkManagerSource:
    name = NAME
    manager = GatewaySource.NETWORKMANAGER
    matches = MATCHES

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    def wants(self, msg: Message) -> bool:
        return bool(msg.sender) and msg.path is not None and msg.path.startswith(PATH)

    async def _props(self, path: str | None, interface: str) -> dict[str, Any]:
        if path is None:
            return {}
        try:
            return await get_all(self.bus, NAME, path, interface)
        except BusCallError as exc:  # the object went away between reads
            log.debug("NetworkManager %s %s: %s", path, interface, exc)
            return {}

    async def snapshot(self) -> dict[str, ManagedLink]:
        body = await call(self.bus, NAME, PATH, NAME, "GetDevices")
        links: dict[str, ManagedLink] = {}
        for path in body[0] if body else []:
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
        gateway = validate.address(ip4.get("Gateway"), "gateway")
        source = GatewaySource.NETWORKMANAGER
        if gateway is None:
            gateway = routers(dhcp.get("Options") or {})
            source = GatewaySource.DHCP
        return ManagedLink(
            interface=iface,
            manager=self.manager,
            state=state,
            gateway=gateway,
            gateway_source=source if gateway is not None else GatewaySource.NONE,
            dns=nameservers(ip4),
            connection_id=validate.text(active.get("Id")),
            connection_uuid=validate.text(active.get("Uuid"), 64),
        )
