"""What an uplink's probe targets stand for in a round: addresses as written,
"gateway" as its gateway now (or its peer), names through its own DNS."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Interface

from nmbalance.config.load import load_text
from nmbalance.core.facts import UplinkFacts
from nmbalance.sources.probes import ProbeTargets
from nmbalance.sources.resolver import ProbeResolver, ResolveError

CONF = ('[[uplink]]\nname = "A"\ninterface = "wan1"\n'
        'probe = ["198.51.100.1", "gateway", "ping.example.net"]\n'
        '[[uplink]]\nname = "P"\ninterface = "ppp0"\nprobe = ["gateway"]\n')
SOURCE = IPv4Address("10.101.0.2")


def test_each_kind_of_target() -> None:
    asked: list[tuple[str, IPv4Address, IPv4Address, int]] = []

    async def query(name: str, server: IPv4Address, source: IPv4Address, mark: int,
                    timeout: float) -> tuple[list[IPv4Address], float]:
        asked.append((name, server, source, mark))
        if name == "ping.example.net":
            return [IPv4Address("192.0.2.7")], 300.0
        raise ResolveError("no answer")

    facts = {
        "A": UplinkFacts(name="A", interface="wan1", present=True, gateway=IPv4Address("10.101.0.1"),
                         addresses=(IPv4Interface("10.101.0.2/24"),),
                         dns=(IPv4Address("10.101.0.53"),)),
        "P": UplinkFacts(name="P", interface="ppp0", present=True, point_to_point=True,
                         peer=IPv4Address("100.64.0.1")),
    }
    config = load_text(CONF, "c.toml").config
    targets = ProbeTargets(lambda name: SOURCE, facts.get, {"A": 0x100, "P": 0x200}.__getitem__,
                           ProbeResolver(query, fallback=lambda: []))
    got, problem = asyncio.run(targets.expand(config.uplink[0], SOURCE))
    assert got == [IPv4Address("198.51.100.1"), IPv4Address("10.101.0.1"),
                   IPv4Address("192.0.2.7")] and problem == ""
    assert asked == [("ping.example.net", IPv4Address("10.101.0.53"), SOURCE, 0x100)]
    got, _ = asyncio.run(targets.expand(config.uplink[1], SOURCE))
    assert got == [IPv4Address("100.64.0.1")]  # a point-to-point link's far end
    assert targets.shown(config) == {
        "A": ["198.51.100.1", "gateway = 10.101.0.1", "ping.example.net = 192.0.2.7"],
        "P": ["gateway = 100.64.0.1"]}
    facts["P"] = UplinkFacts(name="P", interface="ppp0")
    got, problem = asyncio.run(targets.expand(config.uplink[1], SOURCE))
    assert got == [] and problem == "no gateway to probe"
