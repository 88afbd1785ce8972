"""The health monitor: link facts in, health laid over the facts decide() reads."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

from nmbalance.config import load_config_text
from nmbalance.core.facts import Facts, Health, UplinkFacts
from nmbalance.core.health_machine import Lost, Phase, Reply
from nmbalance.core.health_monitor import HealthMonitor, link_state

CONFIG = """
[[uplink]]
name = "DSL"
interface = "wan1"
probe = ["192.0.2.1"]
[[uplink]]
name = "LTE"
interface = "wwan0"
gateway = "10.0.0.1"
"""


def up(name: str, **kw: object) -> UplinkFacts:
    base: dict[str, object] = dict(
        name=name, interface="x", present=True, carrier=True,
        addresses=(IPv4Interface("10.1.0.2/24"),), gateway=IPv4Address("10.1.0.1"))
    base.update(kw)
    return UplinkFacts(**base)  # type: ignore[arg-type]


def test_link_state_names_what_is_missing() -> None:
    assert link_state(False, up("A")).usable
    assert link_state(False, up("A", present=False, gateway_reason="interface wan1 not found")
                      ).why == "interface wan1 not found"
    assert link_state(False, up("A", carrier=False)).why == "no carrier"
    # A link-local IPv6 address alone is no lease.
    assert link_state(False, up("A", addresses=(IPv6Interface("fe80::1/64"),))).why == "no address"
    assert link_state(False, up("A", gateway=None, gateway_reason="no default route")
                      ).why == "no default route"
    assert link_state(True, up("A", gateway=None)).usable  # a static gateway needs no route
    assert link_state(False, up("A", gateway=None, point_to_point=True)).usable


def test_overlay_and_reasons() -> None:
    monitor = HealthMonitor(load_config_text(CONFIG, "t.toml"))
    facts = Facts(uplinks=(up("DSL", carrier=False), up("LTE")))
    changes = monitor.observe_links(facts, 1.0)
    assert [c.describe() for c in changes] == ["DSL down: no carrier"]
    assert changes[0].health_changed
    seen = monitor.overlay(facts)
    assert seen.uplink("DSL").health is Health.DOWN
    assert seen.uplink("DSL").health_reason == "no carrier"
    assert seen.uplink("LTE").health is Health.UP


def test_unprobed_uplink_comes_back_on_link_alone_after_the_hold() -> None:
    monitor = HealthMonitor(load_config_text(CONFIG, "t.toml"))
    monitor.observe_links(Facts(uplinks=(up("DSL"), up("LTE", carrier=False))), 0.0)
    changes = monitor.observe_links(Facts(uplinks=(up("DSL"), up("LTE"))), 1.0)
    assert [c.describe() for c in changes] == ["LTE recovering: link is back; holding 5 s"]
    assert not changes[0].health_changed  # recovering still takes no traffic
    assert monitor.deadline() == 6.0
    assert [c.describe() for c in monitor.tick(6.0)] == ["LTE up: healthy for 5 s"]


def test_reload_keeps_history_only_where_the_probes_stay_the_same() -> None:
    monitor = HealthMonitor(load_config_text(CONFIG, "t.toml"))
    for i in range(3):
        monitor.observe("DSL", Lost("to 192.0.2.1"), float(i))
    assert monitor.phase("DSL") is Phase.DOWN
    monitor.configure(load_config_text(CONFIG.replace("weight", "w"), "t.toml"))
    assert monitor.phase("DSL") is Phase.DOWN
    monitor.configure(load_config_text(CONFIG.replace("192.0.2.1", "192.0.2.2"), "t.toml"))
    assert monitor.phase("DSL") is Phase.UP  # other targets: judged afresh
    assert monitor.observe("GONE", Reply(1.0), 5.0) == []  # a round that outlived its uplink
