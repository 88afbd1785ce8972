"""systemd-networkd over D-Bus: links, their states, and the gateway from
DescribeLink's routes (the default route networkd configured, with its
ConfigSource), or from the DHCP lease file when networkd installs no
default route (UseGateway=no): systemd 252 has no lease object on the bus.

A renewal that changes the router shows on the bus only as
AdministrativeState configuring -> configured, so every signal from
networkd makes us re-read DescribeLink.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from nmbalance.bus.client import BusCallError, call
from nmbalance.bus.compat import Message, MessageBus
from nmbalance.core.facts import GatewaySource, ManagedLink
from nmbalance.core.plan import MAIN_TABLE
from nmbalance.inet import AnyAddress
from nmbalance.sources import validate

log = logging.getLogger(__name__)

NAME = "org.freedesktop.network1"
PATH = "/org/freedesktop/network1"
MANAGER = f"{NAME}.Manager"
LEASES = Path("/run/systemd/netif/leases")


def default_gateway(description: dict[str, Any], family: int = 2) -> AnyAddress | None:
    """The default route's gateway networkd configured (family 2: IPv4, 10: IPv6),
    main table first."""
    def number(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 1 << 32

    routes = [r for r in validate.items(description.get("Routes"), "networkd routes")
              if isinstance(r, dict) and r.get("Family") == family
              and r.get("DestinationPrefixLength") == 0 and r.get("Gateway")]
    routes.sort(key=lambda r: (r.get("Table") != MAIN_TABLE, number(r.get("Priority"))))
    for route in routes:
        gateway = validate.address(route.get("Gateway"), "networkd gateway")
        if gateway is not None:
            return gateway
    return None


def dns_servers(description: dict[str, Any]) -> tuple[AnyAddress, ...]:
    return validate.addresses(description.get("DNS"), "Address", "networkd DNS server")


def lease_router(text: str) -> AnyAddress | None:
    """ROUTER= of a networkd lease file (space-separated when several)."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        router = validate.first_ipv4(value, "lease router") if key.strip() == "ROUTER" else None
        if router is not None:
            return router
    return None


class NetworkdSource:
    name = NAME
    manager = GatewaySource.NETWORKD
    matches: tuple[str, ...] = (f"type='signal',sender='{NAME}'",)

    def __init__(self, bus: MessageBus, leases: Path = LEASES) -> None:
        self.bus = bus
        self.leases = leases

    def wants(self, msg: Message) -> bool:
        return msg.path is not None and msg.path.startswith(PATH)

    async def snapshot(self) -> dict[str, ManagedLink]:
        body = await call(self.bus, NAME, PATH, MANAGER, "ListLinks")
        links: dict[str, ManagedLink] = {}
        for entry in validate.items(body[0] if body else None, "networkd links"):
            # (index, name, object path)
            if not isinstance(entry, list | tuple) or len(entry) < 2:
                continue
            index, name = entry[0], validate.ifname(entry[1])
            if name is None or not isinstance(index, int) or isinstance(index, bool) or not (
                    0 < index < 1 << 31):
                continue
            try:
                raw = await call(self.bus, NAME, PATH, MANAGER, "DescribeLink", "i", [index])
                description = json.loads(raw[0]) if raw and isinstance(raw[0], str) else {}
            except (BusCallError, ValueError) as exc:  # gone since ListLinks, or bad JSON
                log.debug("networkd link %s: %s", name, exc)
                continue
            if not isinstance(description, dict) or description.get(
                    "AdministrativeState") == "unmanaged":
                continue
            links[name] = self._link(name, index, description)
        return links

    def _link(self, name: str, index: int, description: dict[str, Any]) -> ManagedLink:
        gateway = default_gateway(description)
        source = GatewaySource.NETWORKD
        if gateway is None:
            gateway, source = self._lease_router(index), GatewaySource.DHCP
        oper = validate.text(description.get("OperationalState"), 32) or "unknown"
        admin = validate.text(description.get("AdministrativeState"), 32) or "unknown"
        return ManagedLink(
            interface=name,
            manager=self.manager,
            state=f"{oper}/{admin}",
            gateway=gateway,
            gateway_source=source if gateway is not None else GatewaySource.NONE,
            dns=dns_servers(description),
            gateway6=default_gateway(description, 10),
        )

    def _lease_router(self, index: int) -> AnyAddress | None:
        try:
            return lease_router((self.leases / str(index)).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None
