"""Hostile bus data: NetworkManager and networkd answering with wrong types,
malformed entries and addresses that would smuggle text into nft. A bus of
plain values stands in (the integration tests run the real managers); the
parsers must never raise, keep only valid values, and what they keep must
render a clean transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmbalance.bus.compat import Message, MessageType
from nmbalance.config import load_config_text
from nmbalance.core.decide import decide
from nmbalance.core.facts import Facts, GatewaySource, ManagedLink, UplinkFacts
from nmbalance.core.managed import with_managed
from nmbalance.sources import networkd, networkmanager
from nmbalance.sources.validate import _IFNAME
from tests.unit.test_fuzz_config import assert_clean

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

NASTY_TEXT = ["fe80::1%x }\nflush ruleset", "10.1.0.1%eth0", "::", "127.0.0.1", "224.0.0.1",
              "255.255.255.255", "0.0.0.0", "10.1.0.1", "2001:db8::1", "eth0\n", "wan1",
              "wan1; reboot", "/org/freedesktop/NetworkManager/Devices/1", "/", "", "x" * 5000]
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
           | st.sampled_from(NASTY_TEXT) | st.text(max_size=20)
           | st.lists(st.integers(-1, 300), max_size=17))
hostile = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=12) | st.sampled_from(
                           ["Gateway", "address", "Address", "routers", "Family", "Table",
                            "Priority", "DestinationPrefixLength", "Routes", "DNS"]), inner,
                           max_size=5), max_leaves=12)


@dataclass
class Reply:
    body: list[Any]
    message_type: MessageType = MessageType.METHOD_RETURN
    error_name: str | None = None


class FakeBus:
    """Answers each (path, interface or property interface, member) from `answer`."""

    def __init__(self, answer: Callable[[str, str, list[Any]], Any]) -> None:
        self.answer = answer

    async def call(self, msg: Message) -> Reply:
        return Reply([self.answer(msg.path, msg.member, list(msg.body))])


def nm_answers(draw: st.DrawFn) -> Callable[[str, str, list[Any]], Any]:
    devices = draw(st.lists(st.sampled_from(["/org/freedesktop/NetworkManager/Devices/1",
                                             "/org/freedesktop/NetworkManager/Devices/2"])
                            | hostile, max_size=3) | hostile)
    values = {iface: draw(st.dictionaries(st.sampled_from(keys), hostile | st.just(
        "/org/freedesktop/NetworkManager/X/1"), max_size=len(keys)) | hostile)
        for iface, keys in {
            networkmanager.DEVICE: ["IpInterface", "Interface", "State", "Ip4Config",
                                    "Dhcp4Config", "ActiveConnection"],
            networkmanager.IP4CONFIG: ["Gateway", "NameserverData", "AddressData"],
            networkmanager.DHCP4CONFIG: ["Options"],
            networkmanager.ACTIVE: ["Id", "Uuid"],
    }.items()}

    def answer(path: str, member: str, body: list[Any]) -> Any:
        if member == "GetDevices":
            return devices
        return values.get(body[0] if body else "", {})
    return answer


@st.composite
def nm_bus(draw: st.DrawFn) -> FakeBus:
    return FakeBus(nm_answers(draw))


@st.composite
def networkd_bus(draw: st.DrawFn) -> FakeBus:
    links = draw(st.lists(st.tuples(st.integers(-5, 5), st.sampled_from(["wan1", "wan2"]))
                          | hostile, max_size=3) | hostile)
    description = draw(st.fixed_dictionaries({}, optional={
        "Routes": hostile | st.lists(st.fixed_dictionaries({}, optional={
            "Family": st.just(2) | hostile, "DestinationPrefixLength": st.just(0) | hostile,
            "Gateway": st.lists(st.integers(0, 255), min_size=4, max_size=4) | hostile,
            "Table": st.just(254) | hostile, "Priority": hostile}), max_size=3),
        "DNS": hostile, "OperationalState": hostile, "AdministrativeState": hostile,
    }) | hostile)
    as_json = draw(st.booleans())

    def answer(path: str, member: str, body: list[Any]) -> Any:
        if member == "ListLinks":
            return links
        try:
            return json.dumps(description) if as_json else description
        except (TypeError, ValueError):
            return description
    return FakeBus(answer)


def assert_valid(links: dict[str, ManagedLink]) -> None:
    for name, link in links.items():
        assert _IFNAME.fullmatch(name) and link.interface == name
        for addr in (link.gateway, *link.dns):
            if addr is None:
                continue
            assert isinstance(addr, IPv4Address | IPv6Address)
            assert not (addr.is_loopback or addr.is_multicast or addr.is_unspecified)
            assert "%" not in str(addr)
        assert link.state.isprintable() and len(link.state) < 100
        for text in (link.connection_id, link.connection_uuid):
            assert text is None or (text.isprintable() and len(text) <= 256)


CONFIG = load_config_text('snippets_dir = ""\n[[uplink]]\nname = "A"\ninterface = "wan1"\n'
                          '[[uplink]]\nname = "B"\ninterface = "wan2"\n', "t.toml")


def render(links: dict[str, ManagedLink]) -> None:
    facts = Facts(uplinks=tuple(UplinkFacts(
        name=n, interface=f"wan{i}", present=True, carrier=True,
        addresses=(IPv4Interface(f"10.1.{i}.2/16"),), gateway=None) for i, n in ((1, "A"),
                                                                                (2, "B"))))
    assert_clean(decide(CONFIG, with_managed(CONFIG, facts, links)).nft.full_transaction())


@FUZZ
@given(nm_bus())
def test_networkmanager_answers_of_any_shape(bus: FakeBus) -> None:
    links = asyncio.run(networkmanager.NetworkManagerSource(bus).snapshot())  # type: ignore[arg-type]
    assert_valid(links)
    render(links)


@FUZZ
@given(networkd_bus(), st.text(max_size=200) | st.sampled_from(
    ["ROUTER=10.1.0.1%eth0", "ROUTER=127.0.0.1 10.1.0.9", "ROUTER=::"]))
def test_networkd_answers_of_any_shape(bus: FakeBus, lease: str) -> None:
    async def read(folder: Path) -> dict[str, ManagedLink]:
        for index in range(-5, 6):
            (folder / str(index)).write_text(lease)
        return await networkd.NetworkdSource(bus, leases=folder).snapshot()  # type: ignore[arg-type]
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        links = asyncio.run(read(Path(tmp)))
    assert_valid(links)
    render(links)


def test_a_real_looking_answer_is_read() -> None:
    """The stand-in bus is a fair one: well-formed answers give the facts."""
    values = {
        networkmanager.DEVICE: {"Interface": "wan1", "State": 100,
                                "Ip4Config": "/org/freedesktop/NetworkManager/IP4Config/1",
                                "Dhcp4Config": "/", "ActiveConnection": "/"},
        networkmanager.IP4CONFIG: {"Gateway": "10.1.0.1",
                                   "NameserverData": [{"address": "10.1.0.53"},
                                                      {"address": "fe80::1%eth0"}]},
    }
    bus = FakeBus(lambda path, member, body: ["/org/freedesktop/NetworkManager/Devices/1"]
                  if member == "GetDevices" else values.get(body[0], {}))
    links = asyncio.run(networkmanager.NetworkManagerSource(bus).snapshot())  # type: ignore[arg-type]
    link = links["wan1"]
    assert link.state == "activated" and link.gateway == IPv4Address("10.1.0.1")
    assert link.gateway_source is GatewaySource.NETWORKMANAGER
    assert link.dns == (IPv4Address("10.1.0.53"),)  # the scope id one is dropped


def test_only_signals_that_matter_trigger_a_re_read() -> None:
    nm = networkmanager.NetworkManagerSource(None)  # type: ignore[arg-type]

    def signal(path: str, interface: str, member: str, body: list[Any], sig: str) -> Message:
        return Message(message_type=MessageType.SIGNAL, sender=":1.5", path=path,
                       interface=interface, member=member, signature=sig, body=body)

    props = "org.freedesktop.DBus.Properties"
    from nmbalance.bus.compat import Variant
    strength = signal("/org/freedesktop/NetworkManager/AccessPoint/3", props,
                      "PropertiesChanged", [f"{networkmanager.NAME}.AccessPoint",
                                            {"Strength": Variant("y", 40)}, []], "sa{sv}as")
    gateway = signal("/org/freedesktop/NetworkManager/IP4Config/2", props, "PropertiesChanged",
                     [networkmanager.IP4CONFIG, {"Gateway": Variant("s", "10.0.0.1")}, []],
                     "sa{sv}as")
    state = signal("/org/freedesktop/NetworkManager/Devices/1", networkmanager.DEVICE,
                   "StateChanged", [100, 90, 0], "uuu")
    assert not nm.wants(strength)
    assert nm.wants(gateway) and nm.wants(state)
