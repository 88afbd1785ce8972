import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from nmbalance.config import load_config_text
from nmbalance.config.model import Config
from nmbalance.core.decide import decide
from nmbalance.core.facts import Facts, GatewaySource, Health, LanFacts, UplinkFacts
from nmbalance.core.matching import rule_matches
from nmbalance.core.plan import Route, UplinkStatus

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

CONFIG = """
mode = "weighted"
snippets_dir = ""
[[uplink]]
name = "ISP1"
interface = "wan1"
weight = 1
[[uplink]]
name = "ISP2"
interface = "wan2"
weight = 3
dns = ["198.51.100.53"]
[[uplink]]
name = "ISP3"
interface = "wan3"
weight = 2
[[lan]]
name = "LAN"
interface = "lan0"
[[rule]]
name = "bank"
dst = ["203.0.113.0/24"]
proto = "tcp"
dport = [443, "8000-8080"]
method = "persistence"
uplinks = ["ISP1", "ISP2"]
[[rule]]
name = "voip"
src = ["10.250.0.50/32"]
method = "enforced"
uplinks = ["ISP3"]
[firewall]
restrictive = true
[[port_forward]]
port = 8080
to = "10.250.0.10"
to_port = 80
"""


def uplink(n: int, **kw: object) -> UplinkFacts:
    base: dict[str, object] = dict(
        name=f"ISP{n}", interface=f"wan{n}", present=True, carrier=True,
        addresses=(IPv4Interface(f"10.10{n}.0.2/24"),), gateway=IPv4Address(f"10.10{n}.0.1"),
        gateway_source=GatewaySource.KERNEL,
    )
    base.update(kw)
    return UplinkFacts(**base)  # type: ignore[arg-type]


def facts(*ups: UplinkFacts) -> Facts:
    lan = LanFacts("LAN", "lan0", True, (IPv4Network("10.250.0.0/24"),))
    return Facts(uplinks=ups or tuple(uplink(n) for n in (1, 2, 3)), lans=(lan,))


def config(text: str = CONFIG) -> Config:
    return load_config_text(text, "test.toml")


def test_golden_plan() -> None:
    plan = decide(config(), facts(), frozenset({"ISP2", "ISP3"}))
    golden = GOLDEN / "three_isps_rules.txt"
    if os.environ.get("NMB_UPDATE_GOLDEN"):
        golden.write_text(plan.describe())
    assert plan.describe() == golden.read_text()


def test_same_inputs_same_plan() -> None:
    assert decide(config(), facts()) == decide(config(), facts())


def test_weighted_shares_and_live_marks() -> None:
    plan = decide(config(), facts())
    assert [round(u.share, 3) for u in plan.uplinks] == [0.167, 0.5, 0.333]
    assert plan.live_marks == {0x100, 0x200, 0x300}
    assert all(u.status is UplinkStatus.ACTIVE for u in plan.uplinks)


def test_priority_takes_the_highest_healthy_uplink() -> None:
    text = CONFIG.replace('mode = "weighted"', 'mode = "failover"').split("[[rule]]")[0]
    plan = decide(config(text), facts())
    assert [u.status for u in plan.uplinks] == [
        UplinkStatus.STANDBY, UplinkStatus.ACTIVE, UplinkStatus.STANDBY]
    assert [u.share for u in plan.uplinks] == [0.0, 1.0, 0.0]
    down = decide(config(text), facts(uplink(1), uplink(2, carrier=False), uplink(3)))
    assert [u.share for u in down.uplinks] == [0.0, 0.0, 1.0]
    assert down.uplink("ISP2").status is UplinkStatus.DOWN
    assert down.uplink("ISP2").reason == "no carrier"


def test_no_gateway_is_reported_never_guessed() -> None:
    plan = decide(config(), facts(uplink(1), uplink(2, gateway=None, gateway_reason="none here"),
                                  uplink(3)))
    isp2 = plan.uplink("ISP2")
    assert isp2.status is UplinkStatus.NO_GATEWAY and isp2.reason == "none here"
    assert not isp2.routed and all(r.table != isp2.table for r in plan.routes)
    assert 0x200 not in plan.live_marks


def test_point_to_point_needs_no_gateway() -> None:
    plan = decide(config(), facts(uplink(1, gateway=None, point_to_point=True), uplink(2),
                                  uplink(3)))
    assert Route(7701, "0.0.0.0/0", gateway=None, interface="wan1") in plan.routes
    assert plan.uplink("ISP1").gateway_source == "device"


def test_static_gateway_wins() -> None:
    text = CONFIG.replace('interface = "wan1"', 'interface = "wan1"\ngateway = "10.101.0.254"')
    plan = decide(config(text), facts())
    assert plan.uplink("ISP1").gateway == "10.101.0.254"
    assert plan.uplink("ISP1").gateway_source == "static"


def test_enforced_uplink_without_route_is_unreachable_not_leaked() -> None:
    plan = decide(config(), facts(uplink(1), uplink(2), uplink(3, present=False)))
    assert Route(7703, "0.0.0.0/0", kind="unreachable") in plan.routes
    assert any(r.fwmark == 0x300 for r in plan.rules)


def test_dead_uplink_sticky_entries_are_flushed() -> None:
    plan = decide(config(), facts(uplink(1, health=Health.DOWN), uplink(2), uplink(3)))
    assert "flush set inet nmbalance st_Rbank__ISP1" in plan.nft.contents_text
    assert "flush set inet nmbalance st_Rbank__ISP2" not in plan.nft.contents_text


def test_health_change_keeps_structure() -> None:
    a = decide(config(), facts())
    b = decide(config(), facts(uplink(1), uplink(2, carrier=False), uplink(3)))
    assert a.nft.digest == b.nft.digest
    assert a.nft.contents != b.nft.contents and a.nft.contents_text != b.nft.contents_text


def test_rule_matches() -> None:
    rule = config().rule[0]
    assert rule_matches(rule) == [
        "ip daddr { 203.0.113.0/24 } meta l4proto tcp th dport { 443, 8000-8080 }"]


def test_marks_stay_inside_the_mask() -> None:
    text = CONFIG + "\n[kernel]\nmark_mask = 0x00f00000\n"
    plan = decide(config(text), facts())
    assert {u.mark for u in plan.uplinks} == {0x100000, 0x200000, 0x300000}
    assert "meta mark set meta mark and 0xff0fffff or 0x00100000" in plan.nft.structure


def test_fail_open_when_every_uplink_looks_down_but_some_have_carrier() -> None:
    probes_down = dict(health=Health.DOWN, health_reason="3 probes lost in a row")
    plan = decide(config(), facts(uplink(1, **probes_down), uplink(2, carrier=False),
                                  uplink(3, **probes_down)))
    assert [u.status for u in plan.uplinks] == [
        UplinkStatus.ACTIVE, UplinkStatus.DOWN, UplinkStatus.ACTIVE]
    assert plan.uplink("ISP1").reason == "fail-open: 3 probes lost in a row"
    assert plan.live_marks == {0x100, 0x300}
    assert any("failing open" in w for w in plan.warnings)
    closed = config(CONFIG.replace("[firewall]", "[health]\nfail_open = false\n[firewall]"))
    plan = decide(closed, facts(uplink(1, **probes_down), uplink(2, carrier=False),
                                uplink(3, **probes_down)))
    assert plan.live_marks == frozenset()
    # One healthy uplink is enough: no failing open then.
    plan = decide(config(), facts(uplink(1, **probes_down), uplink(2), uplink(3, **probes_down)))
    assert plan.live_marks == {0x200}


def test_a_degraded_uplink_keeps_a_reduced_share() -> None:
    text = CONFIG.split("[[rule]]")[0]
    degraded = dict(health=Health.DEGRADED, health_reason="loss 10% over the last 20 probes")
    plan = decide(config(text), facts(uplink(1), uplink(2, **degraded), uplink(3)))
    # Weights 1:3:2 with ISP2 at 50 %: 1:1.5:2.
    assert [round(u.share * 1000) for u in plan.uplinks] == [222, 333, 445]
    assert plan.uplink("ISP2").reason.startswith("degraded (loss 10%")
    assert 0x200 in plan.live_marks
    halved = config(text + "\n[health]\ndegraded_weight_percent = 10\n")
    plan = decide(halved, facts(uplink(1), uplink(2, **degraded), uplink(3)))
    assert round(plan.uplink("ISP2").share, 3) == round(0.3 / 3.3, 3)


def test_priority_prefers_a_healthy_uplink_to_a_degraded_one() -> None:
    text = CONFIG.replace('mode = "weighted"', 'mode = "priority"').split("[[rule]]")[0]
    degraded = dict(health=Health.DEGRADED, health_reason="slow")
    plan = decide(config(text), facts(uplink(1), uplink(2, **degraded), uplink(3)))
    assert [u.share for u in plan.uplinks] == [0.0, 0.0, 1.0]
    alone = decide(config(text), facts(uplink(1, carrier=False), uplink(2, **degraded),
                                       uplink(3, carrier=False)))
    assert alone.uplink("ISP2").share == 1.0  # still better than nothing


def test_an_uplink_the_kernel_refused_is_out_with_the_kernels_reason() -> None:
    plan = decide(config(), facts(), refused={"ISP3": "cannot add route: Nexthop has invalid gateway"})
    isp3 = plan.uplink("ISP3")
    assert isp3.status is UplinkStatus.ERROR and isp3.reason.endswith("invalid gateway")
    assert not isp3.routed and 0x300 not in plan.live_marks
    assert not any(r.table == 7703 and r.kind == "unicast" for r in plan.routes)
    assert plan.uplink("ISP1").share + plan.uplink("ISP2").share == 1.0
    # Its flows keep their conntrack entries: the route may be back at the next retry.
    assert 0x300 not in plan.dead_marks


def test_an_interface_that_is_down_gets_no_route() -> None:
    plan = decide(config(), facts(uplink(1), uplink(2, up=False, carrier=False), uplink(3)))
    isp2 = plan.uplink("ISP2")
    assert isp2.status is UplinkStatus.DOWN and isp2.reason == "wan2 is down"
    assert not isp2.routed and all(r.table != 7702 for r in plan.routes)


def test_ids_follow_names_not_positions() -> None:
    plan = decide(config(), facts(), ids={"ISP3": 1, "ISP1": 3})
    assert {u.name: (u.mark, u.table) for u in plan.uplinks} == {
        "ISP1": (0x300, 7703), "ISP2": (0x200, 7702), "ISP3": (0x100, 7701)}
    assert "0x100 : goto rs_ISP3" in plan.nft.structure


def test_routing_diff_adds_and_replaces_before_removing() -> None:
    from nmbalance.core.plan import RoutingRule
    from nmbalance.dataplane.routing import diff

    old_gw = Route(7701, "0.0.0.0/0", gateway="10.101.0.1", interface="wan1")
    new_gw = Route(7701, "0.0.0.0/0", gateway="10.101.0.254", interface="wan1")
    gone = Route(7703, "0.0.0.0/0", gateway="10.103.0.1", interface="wan3")
    added = Route(7704, "0.0.0.0/0", gateway="10.104.0.1", interface="wan4")
    keep = RoutingRule(7700, 254, suppress_prefixlength=0)
    old_rule = RoutingRule(7703, 7703, fwmark=0x300, fwmask=0xFF00)
    new_rule = RoutingRule(7704, 7704, fwmark=0x400, fwmask=0xFF00)
    d = diff([old_gw, gone], [keep, old_rule], [new_gw, added], [keep, new_rule])
    assert d.add_routes == (added,) and d.replace_routes == ((old_gw, new_gw),)
    assert d.add_rules == (new_rule,) and d.del_rules == (old_rule,)
    assert d.del_routes == (gone,)
    assert diff([new_gw], [keep], [new_gw], [keep]).empty
