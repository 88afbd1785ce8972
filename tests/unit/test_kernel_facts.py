"""Facts from netlink data: each family's gateway from its own default routes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network

import pytest

from nmbalance.config import load_config_text
from nmbalance.core.facts import GatewaySource
from nmbalance.sources.kernel_facts import KernelAddress, KernelLink, KernelRoute, facts_from

CONFIG = '[[uplink]]\nname = "A"\ninterface = "wan1"\n[[uplink]]\nname = "B"\ninterface = "wan2"\n'


def route(dst: str, gateway: str | None, oif: int, metric: int = 100, proto: int = 9,
          table: int = 254) -> KernelRoute:
    return KernelRoute(table, ip_network(dst), gateway, oif, proto, 1, metric)


def test_ipv6_gateways_come_from_each_interfaces_own_default_route() -> None:
    config = load_config_text(CONFIG, "t.toml")
    links = {1: KernelLink(1, "wan1", 0x10001, 1), 2: KernelLink(2, "wan2", 0x10001, 1)}
    addresses = {1: [KernelAddress(ip_interface("10.101.0.2/24")),
                     KernelAddress(ip_interface("2001:db8:101::2/64")),
                     KernelAddress(ip_interface("fe80::2/64"))],
                 2: [KernelAddress(ip_interface("10.102.0.2/24"))]}
    routes = [route("0.0.0.0/0", "10.101.0.1", 1, proto=16),
              route("0.0.0.0/0", "10.102.0.1", 2, proto=16),
              # Both ISPs announce fe80::1: each is only meaningful with its interface.
              route("::/0", "fe80::1", 1), route("::/0", "fe80::1", 2, metric=1024),
              route("::/0", "fe80::99", 2, metric=50, proto=211)]  # ours: never a fact
    facts = facts_from(config, links, addresses, routes)
    a, b = facts.uplink("A"), facts.uplink("B")
    assert a.gateway == IPv4Address("10.101.0.1") and a.gateway6 == IPv6Address("fe80::1")
    assert a.gateway6_source is GatewaySource.KERNEL
    assert b.gateway6 == IPv6Address("fe80::1") and b.interface == "wan2"
    # The IPv4 default route decides which uplink the kernel prefers for unbound sockets.
    assert facts.main_default == "wan1" and facts.main_default6 == "wan1"
    only4 = facts_from(config, links, addresses, routes[:2])
    assert only4.uplink("A").gateway6 is None
    assert only4.uplink("A").gateway6_source is GatewaySource.NONE


@pytest.mark.parametrize("mode", ["npt", "prefix"])
def test_ipv6_modes_of_prefixes_are_refused_without_one(mode: str) -> None:
    with pytest.raises(Exception) as caught:
        load_config_text(f'ipv6 = "{mode}"\n' + CONFIG, "t.toml")
    assert "t.toml:1: ipv6:" in str(caught.value) and "no uplink has one" in str(caught.value)
    assert load_config_text('ipv6 = "off"\n' + CONFIG, "t.toml").ipv6 == "off"


def test_a_static_gateway6_is_shown_as_static_and_scope_ids_are_refused() -> None:
    config = load_config_text(CONFIG.replace('interface = "wan2"\n',
                                             'interface = "wan2"\ngateway6 = "fe80::9"\n'), "t")
    links = {1: KernelLink(1, "wan1", 0x10001, 1), 2: KernelLink(2, "wan2", 0x10001, 1)}
    facts = facts_from(config, links, {}, [route("::/0", "fe80::1", 2)])
    b = facts.uplink("B")
    assert b.gateway6 == IPv6Address("fe80::9") and b.gateway6_source is GatewaySource.STATIC
    for bad, why in (('"fe80::1%wan2"', "scope id"), ('"10.0.0.1"', "is IPv4"),
                     ('"ff02::1"', "not a unicast address")):
        with pytest.raises(Exception) as caught:
            load_config_text(CONFIG + f"gateway6 = {bad}\n", "t.toml")
        assert "uplink[1].gateway6" in str(caught.value) and why in str(caught.value), caught.value


def test_a_managers_ipv6_gateway_is_taken_unless_one_is_configured() -> None:
    from nmbalance.core.facts import ManagedLink
    from nmbalance.core.managed import with_managed
    from nmbalance.sources.networkd import default_gateway

    described = {"Routes": [
        {"Family": 2, "DestinationPrefixLength": 0, "Gateway": [10, 101, 0, 1], "Table": 254},
        {"Family": 10, "DestinationPrefixLength": 0, "Table": 254,
         "Gateway": list(IPv6Address("fe80::1").packed)}]}
    assert default_gateway(described) == IPv4Address("10.101.0.1")
    assert default_gateway(described, 10) == IPv6Address("fe80::1")
    config = load_config_text(CONFIG.replace('interface = "wan2"\n',
                                             'interface = "wan2"\ngateway6 = "fe80::9"\n'), "t")
    links = {1: KernelLink(1, "wan1", 0x10001, 1), 2: KernelLink(2, "wan2", 0x10001, 1)}
    facts = facts_from(config, links, {}, [])
    managed = {f"wan{n}": ManagedLink(f"wan{n}", GatewaySource.NETWORKD, "routable/configured",
                                      gateway6=IPv6Address("fe80::1")) for n in (1, 2)}
    merged = with_managed(config, facts, managed)
    assert merged.uplink("A").gateway6_source is GatewaySource.NETWORKD
    assert merged.uplink("B").gateway6 == IPv6Address("fe80::9")  # configured: kept
    assert merged.uplink("B").gateway6_source is GatewaySource.STATIC
