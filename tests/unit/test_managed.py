"""What network managers say, parsed and laid over the kernel's facts (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address

from nmbalance.config import load_config_text
from nmbalance.core.facts import Facts, GatewaySource, ManagedLink, UplinkFacts
from nmbalance.core.managed import resolve_interfaces, with_managed
from nmbalance.sources.networkd import default_gateway, lease_router
from nmbalance.sources.networkmanager import device_state, nameservers, routers
from nmbalance.sources.validate import address, ifname

CONFIG = load_config_text("""
[[uplink]]
name = "DSL"
interface = "eth0"
[[uplink]]
name = "LTE"
connection = "Phone tether"
[[uplink]]
name = "Fiber"
interface = "eth2"
dns = ["192.0.2.53"]
""", "t.toml")


def link(iface: str, **kw: object) -> ManagedLink:
    base: dict[str, object] = dict(interface=iface, manager=GatewaySource.NETWORKMANAGER,
                                   state="activated")
    base.update(kw)
    return ManagedLink(**base)  # type: ignore[arg-type]


def test_connections_resolve_to_their_current_interface() -> None:
    managed = {"usb0": link("usb0", connection_id="Phone tether", connection_uuid="u-1"),
               "eth0": link("eth0", connection_id="Wired")}
    assert resolve_interfaces(CONFIG, managed) == {"LTE": "usb0"}
    assert resolve_interfaces(CONFIG, {}) == {}


def test_manager_gateway_dns_and_reasons() -> None:
    facts = Facts(uplinks=(
        UplinkFacts("DSL", "eth0", True, True, addresses=(IPv4Interface("10.0.0.5/24"),),
                    gateway=IPv4Address("10.0.0.254"), gateway_source=GatewaySource.KERNEL),
        UplinkFacts("LTE", "usb0", True, True, addresses=(IPv4Interface("192.168.42.7/24"),),
                    gateway_reason="no default route via usb0"),
        UplinkFacts("Fiber", "eth2", True, True, addresses=(IPv4Interface("100.64.0.9/24"),)),
    ))
    managed = {
        "eth0": link("eth0", gateway=IPv4Address("10.0.0.1"),
                     gateway_source=GatewaySource.NETWORKMANAGER),
        "usb0": link("usb0", gateway=IPv4Address("192.168.42.129"),
                     gateway_source=GatewaySource.DHCP, dns=(IPv4Address("192.168.42.129"),)),
        # A router outside every network of the link: never used.
        "eth2": link("eth2", gateway=IPv4Address("203.0.113.1"),
                     gateway_source=GatewaySource.DHCP, dns=(IPv4Address("203.0.113.53"),)),
    }
    out = with_managed(CONFIG, facts, managed)
    dsl, lte, fiber = out.uplinks
    assert (dsl.gateway, dsl.gateway_source) == (IPv4Address("10.0.0.1"),
                                                 GatewaySource.NETWORKMANAGER)
    assert (lte.gateway, lte.gateway_source, lte.gateway_reason) == (
        IPv4Address("192.168.42.129"), GatewaySource.DHCP, "")
    assert lte.dns == (IPv4Address("192.168.42.129"),)
    assert fiber.gateway is None
    assert fiber.gateway_reason == "networkmanager gateway 203.0.113.1 is not on a network of eth2"
    assert fiber.dns == ()  # configured DNS servers win over the manager's


def test_networkmanager_values_are_validated() -> None:
    assert routers({"routers": "10.0.0.1 10.0.0.2"}) == IPv4Address("10.0.0.1")
    assert routers({"routers": "not-an-address; rm -rf /"}) is None
    assert routers({}) is None
    assert nameservers({"NameserverData": [{"address": "192.0.2.1"}, {"address": "x"}, "junk"]}
                       ) == (IPv4Address("192.0.2.1"),)
    # IPv6 servers: arrays of 16 bytes; short, scoped-by-type or IPv4 ones dropped.
    six = IPv6Address("2001:db8:53::1")
    assert nameservers({}, {"Nameservers": [six.packed, b"\x01\x02", "junk",
                                            IPv4Address("192.0.2.9").packed,
                                            IPv6Address("ff02::1").packed]}) == (six,)
    assert device_state(100) == "activated" and device_state(999) == "state-999"
    assert ifname("wan1") == "wan1" and ifname("eth0;reboot") is None and ifname(7) is None
    assert address([10, 1, 2, 3]) == IPv4Address("10.1.2.3") and address([300, 1, 1, 1]) is None


def test_networkd_gateway_from_describe_link_and_lease() -> None:
    description = {"Routes": [
        {"Family": 2, "DestinationPrefixLength": 32, "Gateway": [10, 0, 0, 9], "Table": 254},
        {"Family": 2, "DestinationPrefixLength": 0, "Gateway": [10, 0, 0, 2], "Table": 100},
        {"Family": 2, "DestinationPrefixLength": 0, "Gateway": [10, 0, 0, 1], "Table": 254,
         "Priority": 100},
        {"Family": 10, "DestinationPrefixLength": 0, "Gateway": [0] * 16, "Table": 254},
    ]}
    assert default_gateway(description) == IPv4Address("10.0.0.1")
    assert default_gateway({"Routes": "garbage"}) is None
    assert lease_router("ADDRESS=10.0.0.5\nROUTER=10.0.0.1 10.0.0.3\nT1=10\n") == IPv4Address(
        "10.0.0.1")
    assert lease_router("ROUTER=bogus\n") is None
