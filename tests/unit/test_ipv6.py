"""ipv6 = "nat66" in decide(): each family's decision apart, and what it asks of the
kernel. Pure: facts built by hand."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_interface

import pytest

from nmbalance.config import load_config_text
from nmbalance.core.decide import decide
from nmbalance.core.decide6 import translations
from nmbalance.core.explain import explain
from nmbalance.core.facts import Facts, GatewaySource, Health, LanFacts, UplinkFacts
from nmbalance.core.health_monitor import HealthMonitor
from nmbalance.core.matching import Connection, first_unmet, rule_matches
from nmbalance.core.plan import Route, RoutingRule, UplinkStatus

CONFIG = """ipv6 = "nat66"
snippets_dir = ""
[[uplink]]
name = "A"
interface = "wan1"
weight = 1
probe = ["198.51.100.1", "2001:db8:ff:1::1"]
[[uplink]]
name = "B"
interface = "wan2"
weight = 3
[[uplink]]
name = "C"
interface = "wan3"
weight = 2
"""


def up(n: int, six: bool = True, **kw: object) -> UplinkFacts:
    addrs = [ip_interface(f"10.10{n}.0.2/24"), ip_interface(f"fe80::{n}/64")]
    if six:
        addrs.append(ip_interface(f"2001:db8:10{n}::2/64"))
    base: dict[str, object] = dict(
        name="ABC"[n - 1], interface=f"wan{n}", present=True, carrier=True,
        addresses=tuple(addrs), gateway=IPv4Address(f"10.10{n}.0.1"),
        gateway_source=GatewaySource.KERNEL,
        gateway6=IPv6Address("fe80::1") if six else None,
        gateway6_source=GatewaySource.KERNEL if six else GatewaySource.NONE)
    base.update(kw)
    return UplinkFacts(**base)  # type: ignore[arg-type]


def facts(*ups: UplinkFacts) -> Facts:
    return Facts(uplinks=ups, links=frozenset(u.interface or "" for u in ups),
                 main_default="wan1", main_default6="wan1")


def test_each_family_is_decided_apart() -> None:
    config = load_config_text(CONFIG, "t.toml")
    plan = decide(config, facts(up(1), up(2, health6=Health.DOWN, health6_reason="no reply"),
                                up(3, six=False)))
    a, b, c = (plan.uplink(n) for n in "ABC")
    assert (a.status, a.status6) == (UplinkStatus.ACTIVE, UplinkStatus.ACTIVE)
    assert (b.status, b.status6, b.reason6) == (UplinkStatus.ACTIVE, UplinkStatus.DOWN, "no reply")
    assert (c.status6, c.reason6) == (UplinkStatus.NO_GATEWAY, "no global IPv6 address")
    assert a.share6 == 1.0 and b.share6 == 0.0 and round(b.share, 3) == 0.5
    assert plan.dead_marks == frozenset() and plan.dead_marks6 == {b.mark, c.mark}
    # IPv6 tables: B keeps its own while its probes say down (they need it to see it
    # come back); C, with no IPv6, has none.
    assert Route(a.table, "::/0", gateway="fe80::1", interface="wan1", family=6) in plan.routes
    assert Route(b.table, "::/0", gateway="fe80::1", interface="wan2", family=6) in plan.routes
    assert not any(r.family == 6 and r.table == c.table for r in plan.routes)
    assert Route(b.table, "0.0.0.0/0", gateway="10.102.0.1", interface="wan2") in plan.routes
    six = {r for r in plan.rules if r.family == 6}
    assert RoutingRule(7700, 254, family=6, suppress_prefixlength=0) in six
    assert any(r.src == "2001:db8:101::2/128" for r in six)
    assert not any(r.src and r.src.startswith("fe80") for r in six)  # link-local names none
    text = plan.nft.full_transaction()
    assert "meta nfproto ipv6 goto pick6_default" in text
    assert "oifname @masq6 meta nfproto ipv6 masquerade" in text
    assert "meta nfproto ipv6 return" not in text
    assert "add element inet nmbalance w6_default { 0-999 : goto up_A }" in text
    # The main table's default uplink's address is no sign of a choice; others' are.
    assert "add element inet nmbalance source6 { 2001:db8:102::2 : goto up_B }" in text
    assert "fe80::/10" in text and "ff00::/8" in text  # never balanced


def test_enforced_keeps_ipv6_off_other_uplinks_when_its_own_is_dead() -> None:
    config = load_config_text(CONFIG.replace('ipv6 = "nat66"', 'ipv6 = "nat66"\nmode = "enforced"'),
                              "t.toml")
    plan = decide(config, facts(up(1, six=False), up(2), up(3)))
    a = plan.uplink("A")
    assert Route(a.table, "::/0", kind="unreachable", family=6) in plan.routes
    assert any(r.family == 6 and r.fwmark == a.mark for r in plan.rules)


def test_persistence_pins_ipv6_in_sets_of_its_own_forgotten_with_the_uplinks_ipv6() -> None:
    config = load_config_text(CONFIG.replace('ipv6 = "nat66"', 'ipv6 = "nat66"\n'
                                             'mode = "persistence"'), "t.toml")
    plan = decide(config, facts(up(1), up(2, health6=Health.DOWN), up(3)))
    text = plan.nft.full_transaction()
    assert "set st6_default__B { typeof ip6 saddr; flags dynamic,timeout; timeout 600s; }" in text
    assert "ip6 saddr @st6_default__A goto up_A" in text
    assert "update @st6_default__A { ip6 saddr }" in text
    assert "goto learn6_default__A" in text and "goto learn_default__B" in text
    # B's IPv6 is out: its IPv6 entries go, its IPv4 ones stay.
    assert plan.nft.contents.dead_sticky_sets6 == ("st6_default__B",)
    assert plan.nft.contents.dead_sticky_sets == ()
    assert plan.nft.sticky_sets["st6_default__C"] == "C"


def test_off_leaves_the_ruleset_and_routes_ipv4_only() -> None:
    config = load_config_text(CONFIG.replace('ipv6 = "nat66"\n', "").replace(
        ', "2001:db8:ff:1::1"', ""), "t.toml")
    plan = decide(config, facts(up(1), up(2), up(3)))
    assert all(r.family == 4 for r in (*plan.routes, *plan.rules))
    assert "meta nfproto ipv6 return" in plan.nft.structure and "w6_" not in plan.nft.structure
    assert all(u.status6 is None for u in plan.uplinks)


@pytest.mark.parametrize(("edit", "where", "why"), [
    (('ipv6 = "nat66"', 'ipv6 = "npt"'), "t.toml:1: ipv6", "no uplink has one"),
    (('weight = 3\n', 'weight = 3\nprefix6 = "2001:db8:102:100::/56"\n'),
     "uplink[1].prefix6", "only with ipv6 = \"npt\""),
    (('weight = 3\n', 'weight = 3\nprefix6 = "2001:db8:102:100::/80"\n'),
     "uplink[1].prefix6", "longer than /64"),
    (('weight = 3\n', 'weight = 3\nprefix6 = "fe80::/64"\n'), "uplink[1].prefix6",
     "not a unicast prefix"),
    (('weight = 3\n', 'weight = 3\nprefix6 = "2001:db8:102:100::1/56"\n'),
     "uplink[1].prefix6", "host bits set"),
    (('ipv6 = "nat66"\n', ""), "uplink[0].probe", "set ipv6 = \"nat66\""),
    (('"2001:db8:ff:1::1"', '"fe80::1"'), "uplink[0].probe", "link-local"),
    (('"2001:db8:ff:1::1"', '"2001:db8::1%eth0"'), "uplink[0].probe", "scope id"),
])
def test_ipv6_inputs_that_dont_fit_are_refused(edit: tuple[str, str], where: str,
                                               why: str) -> None:
    with pytest.raises(Exception) as caught:
        load_config_text(CONFIG.replace(*edit), "t.toml")
    assert where in str(caught.value) and why in str(caught.value), caught.value


def test_ipv6_health_is_tracked_from_ipv6_targets_only() -> None:
    config = load_config_text(CONFIG, "t.toml")
    four, six = HealthMonitor(config), HealthMonitor(config, 6)
    assert four.policies["A"].probed and six.policies["A"].probed
    assert not six.policies["B"].probed  # no IPv6 targets: its link decides
    f = facts(up(1), up(2, gateway6=None, gateway6_source=GatewaySource.NONE), up(3))
    changes = six.observe_links(f, 0.0)
    assert [(c.uplink, c.describe()) for c in changes] == [
        ("B", "B IPv6 down: no IPv6 default route")]
    overlaid = six.overlay(f).uplink("B")
    assert overlaid.health6 is Health.DOWN and overlaid.health is Health.UP
    off = load_config_text(CONFIG.replace('ipv6 = "nat66"\n', "").replace(
        ', "2001:db8:ff:1::1"', ""), "t.toml")
    assert HealthMonitor(off, 6).trackers == {}
    assert replace(f, main_default6=None).main_default6 is None


NPT = CONFIG.replace('ipv6 = "nat66"', 'ipv6 = "npt"').replace(
    'weight = 1\n', 'weight = 1\nprefix6 = "2001:db8:101:100::/56"\n').replace(
    'weight = 3\n', 'weight = 3\nprefix6 = "2001:db8:102:100::/56"\n') + """[[lan]]
name = "L"
interface = "lan0"
"""


def test_npt_packs_each_lan_prefix_into_a_block_of_its_own_length() -> None:
    pd = IPv6Network("2001:db8:101:100::/56")
    lans = [IPv6Network("fd00:1::/64"), IPv6Network("fd00:2::/60"), IPv6Network("fd00:3::/64"),
            IPv6Network("fd00::/48")]
    placed, left = translations(pd, lans)
    assert [(str(a), str(b)) for a, b in placed] == [
        ("fd00:1::/64", "2001:db8:101:100::/64"),
        ("fd00:2::/60", "2001:db8:101:110::/60"),  # aligned: the next /60 boundary
        ("fd00:3::/64", "2001:db8:101:120::/64")]
    assert left == [IPv6Network("fd00::/48")]  # wider than the whole delegation
    full, over = translations(IPv6Network("2001:db8::/63"), [IPv6Network(f"fd00:{i}::/64")
                                                             for i in range(3)])
    assert len(full) == 2 and over == [IPv6Network("fd00:2::/64")]


def test_npt_translates_lan_prefixes_per_uplink_and_masquerades_the_rest() -> None:
    config = load_config_text(NPT, "t.toml")
    lan = LanFacts("L", "lan0", True, (IPv4Network("10.250.0.0/24"),
                                       IPv6Network("fd00:250::/64"), IPv6Network("fe80::/64")))
    plan = decide(config, replace(facts(up(1), up(2), up(3)), lans=(lan,)))
    c = plan.nft.contents
    assert c.npt6 == {"A": (("fd00:250::/64", "2001:db8:101:100::/64"),),
                      "B": (("fd00:250::/64", "2001:db8:102:100::/64"),)}
    assert c.npt6_devices == {"wan1": "A", "wan2": "B"}
    text = plan.nft.full_transaction()
    assert "add element inet nmbalance npt6_A { fd00:250::/64 : 2001:db8:101:100::/64 }" in text
    assert "add element inet nmbalance nptin6_B { 2001:db8:102:100::/64 : fd00:250::/64 }" in text
    assert "snat ip6 prefix to ip6 saddr map @npt6_A" in text
    assert "meta nfproto ipv6 oifname vmap @npt6_out" in text
    # C has no prefix6: its LAN IPv6 is masqueraded, as the plan says.
    assert "wan3" in c.masquerade6 and "C" not in c.npt6
    assert plan.uplink("C").translation6 == "masquerade"
    assert plan.uplink("A").translation6 == "npt into 2001:db8:101:100::/56"
    assert Route(plan.uplink("A").table, "2001:db8:101:100::/56", kind="unreachable",
                 family=6) in plan.routes


PREFIX = NPT.replace('ipv6 = "npt"', 'ipv6 = "prefix"')


def test_prefix_prefers_the_top_uplinks_prefix_and_rescues_a_dead_ones_sources() -> None:
    config = load_config_text(PREFIX.replace("weight = 1\n", "weight = 5\n", 1), "t.toml")
    lan = LanFacts("L", "lan0", True, (IPv4Network("10.250.0.0/24"),))
    both = replace(facts(up(1), up(2), up(3)), lans=(lan,))
    plan = decide(config, both)
    assert plan.radvd is not None
    text = plan.radvd.text
    assert "interface lan0 {" in text
    # A (weight 5) is on top: its /64 is preferred, B's advertised deprecated.
    assert "prefix 2001:db8:101:100::/64 {  # A" in text
    a_block, b_block = (text.split(f"prefix 2001:db8:10{n}:100::/64")[1].split("};")[0]
                        for n in (1, 2))
    assert "AdvPreferredLifetime 2700;" in a_block and "AdvPreferredLifetime 0;" in b_block
    assert "AdvValidLifetime 5400;" in b_block  # still valid: its connections go on
    c = plan.nft.contents
    assert c.prefix6_src == {"2001:db8:101:100::/56": "A", "2001:db8:102:100::/56": "B"}
    assert c.npt6 == {}
    assert plan.uplink("B").status6 is UplinkStatus.STANDBY
    assert Route(254, "2001:db8:102:100::/64", interface="lan0", family=6) in plan.routes
    assert "ip6 saddr vmap @prefix6_src" in plan.nft.structure
    assert "ip6 saddr @native6 accept" in plan.nft.structure
    # A's IPv6 dies: B's prefix is preferred, A's sources leave by B translated.
    dead = decide(config, replace(both, uplinks=(up(1, health6=Health.DOWN), up(2), up(3))))
    assert dead.radvd is not None
    assert "AdvPreferredLifetime 2700;" in dead.radvd.text.split(
        "prefix 2001:db8:102:100::/64")[1].split("};")[0]
    c = dead.nft.contents
    assert c.prefix6_src["2001:db8:101:100::/56"] == "B"
    assert c.npt6 == {"B": (("2001:db8:101:100::/64", "2001:db8:102:100::/64"),)}
    assert "leave by B translated" in dead.uplink("A").translation6


def test_prefix_needs_lans_and_room_for_them() -> None:
    with pytest.raises(Exception, match="there is no"):
        load_config_text(PREFIX.split("[[lan]]")[0], "t.toml")
    two = PREFIX.replace("::/56", "::/64") + '[[lan]]\nname = "M"\ninterface = "lan1"\n'
    with pytest.raises(Exception, match=r"holds 1 /64, and there are 2 LANs"):
        load_config_text(two, "t.toml")


def test_fastest_response_learns_ipv6_destinations_in_sets_of_their_own() -> None:
    config = load_config_text(CONFIG.replace('ipv6 = "nat66"\n',
                                             'ipv6 = "nat66"\nmode = "fastest-response"\n'),
                              "t.toml")
    plan = decide(config, facts(up(1), up(2, health6=Health.DOWN, health6_reason="no reply"),
                                up(3, six=False)))
    text = plan.nft.structure
    for u in "ABC":
        assert f"set st6_default__{u} {{ typeof ip6 daddr; flags dynamic,timeout;" in text
        assert f"ip6 daddr @st6_default__{u} goto up_{u}" in text
    assert "set asked6_default { typeof ip6 daddr;" in text
    assert ("ip6 daddr != @asked6_default limit rate 100/second burst 500 packets "
            'add @asked6_default { ip6 daddr } log prefix "nmb:default" group 7700') in text
    pick6 = text[text.index("chain pick6_default"):]
    assert pick6.index("@st6_default__A") < pick6.index("@asked6_default") < pick6.index("@w6_")
    # B's IPv6 is dead (C has none): their learned IPv6 destinations go, their
    # IPv4 ones stay.
    contents = plan.nft.contents
    assert contents.dead_sticky_sets6 == ("st6_default__B", "st6_default__C")
    assert contents.dead_sticky_sets == ()


def test_ipv6_takes_the_weights_measured_from_its_own_figures() -> None:
    config = load_config_text(CONFIG.replace('ipv6 = "nat66"\n',
                                             'ipv6 = "nat66"\nmode = "lowest-latency"\n')
                              .replace('weight = 3\n', 'weight = 3\nprobe = ["198.51.100.2"]\n')
                              .replace('weight = 2\n', 'weight = 2\nprobe = ["198.51.100.3"]\n'),
                              "t.toml")
    f = facts(up(1), up(2), up(3))
    plan = decide(config, f, measured={"default": {"A": 1.0}},
                  measured6={"default": {"B": 1.0}})
    assert [(u.name, u.share, u.share6) for u in plan.uplinks] == [
        ("A", 1.0, 0.0), ("B", 0.0, 1.0), ("C", 0.0, 0.0)]
    # Without IPv6 figures of its own, IPv6 follows IPv4's.
    plan = decide(config, f, measured={"default": {"A": 1.0}})
    assert plan.uplink("A").share6 == 1.0


RULES = CONFIG + """[[rule]]
name = "video"
dst = ["203.0.113.0/24", "2001:db8:aa::/48"]
proto = "tcp"
dport = [443]
method = "enforced"
uplinks = ["B"]
[[rule]]
name = "lab6"
src = ["fd00:250::/64"]
method = "priority"
uplinks = ["A", "C"]
[[rule]]
name = "ping6"
proto = "icmpv6"
method = "enforced"
uplinks = ["A"]
"""


def test_rules_match_ipv6_prefixes_with_an_nft_rule_per_family() -> None:
    config = load_config_text(RULES, "t.toml")
    video, lab6, ping6 = config.rule
    assert (video.families(), lab6.families(), ping6.families()) == ((4, 6), (6,), (6,))
    assert rule_matches(video) == [
        "ip daddr { 203.0.113.0/24 } meta l4proto tcp th dport { 443 }",
        "ip6 daddr { 2001:db8:aa::/48 } meta l4proto tcp th dport { 443 }"]
    assert rule_matches(lab6) == ["ip6 saddr { fd00:250::/64 }"]
    assert rule_matches(ping6) == ["meta l4proto ipv6-icmp"]
    structure = decide(config, facts(up(1), up(2), up(3))).nft.structure
    # Compiled into each family's maps (core.rulemap), IPv6 keyed by its own addresses.
    assert ("meta nfproto ipv6 meta l4proto { tcp, udp, sctp } meta l4proto . ip6 saddr . "
            "ip6 daddr . th dport vmap @rules6p_0") in structure
    assert ("6 . ::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff . 2001:db8:aa::-2001:db8:aa:ffff:"
            "ffff:ffff:ffff:ffff . 443 : goto pick_Rvideo") in structure
    # First match wins: ICMPv6 from the LAN prefix is lab6's, the rest of it ping6's.
    assert ("7-255 . fd00:250::-fd00:250::ffff:ffff:ffff:ffff . ::-ffff:ffff:ffff:ffff:ffff:"
            "ffff:ffff:ffff : goto pick_Rlab6") in structure
    assert "58 . ::-fd00:24f:ffff:ffff:ffff:ffff:ffff:ffff . ::-" in structure
    hit = Connection(IPv6Address("2001:db8:aa::5"), IPv6Address("fd00:250::2"), "tcp", 5000, 443)
    assert first_unmet(video, hit) is None
    miss = first_unmet(video, Connection(IPv6Address("2001:db8:bb::5"), None, "tcp", None, 443))
    assert miss is not None and miss.describe() == "dst 2001:db8:aa::/48"
    four = first_unmet(lab6, Connection(IPv4Address("198.51.100.9"), IPv4Address("10.0.0.2")))
    assert four is not None and four.describe() == "src fd00:250::/64"


@pytest.mark.parametrize(("edit", "why"), [
    (('dst = ["203.0.113.0/24", "2001:db8:aa::/48"]', 'dst = ["2001:db8:aa::/48"]\n'
      'src = ["10.0.0.0/8"]'), "no address family in common"),
    (('proto = "icmpv6"', 'proto = "icmp"\nsrc = ["fd00::/8"]'), "no address family in common"),
    (('ipv6 = "nat66"\n', ""), "matches IPv6 only"),
    (('"2001:db8:aa::/48"', '"2001:db8:aa::%eth0/48"'), "scope id"),
])
def test_ipv6_rules_that_cannot_match_are_refused(edit: tuple[str, str], why: str) -> None:
    text = RULES.replace(*edit)
    if why == "matches IPv6 only":
        text = text.replace(', "2001:db8:ff:1::1"', "")
    with pytest.raises(Exception) as caught:
        load_config_text(text, "t.toml")
    assert why in str(caught.value), caught.value


def test_explain_walks_rules_and_bypasses_for_ipv6() -> None:
    config = load_config_text(RULES, "t.toml")
    plan = decide(config, facts(up(1), up(2, health6=Health.DOWN, health6_reason="no reply"),
                                up(3)))
    lan = IPv6Address("fd00:250::2")
    video = explain(config, plan, Connection(IPv6Address("2001:db8:aa::5"), lan, "tcp", None, 443))
    assert video.rule == "video" and video.uplink is None
    assert video.excluded == {"B": "down: no reply"}  # B's IPv6, though its IPv4 is up
    pinned = explain(config, plan, Connection(IPv6Address("2001:db8:bb::5"), lan, "udp",
                                              None, 53))
    assert pinned.rule == "lab6" and pinned.uplink == "C"  # priority: C outweighs A
    default = explain(config, plan, Connection(IPv6Address("2001:db8:bb::5"),
                                               IPv6Address("fd00:251::2"), "udp", None, 53))
    assert default.rule is None
    assert default.distribution == pytest.approx({"C": 2 / 3, "A": 1 / 3}, abs=0.001)
    local = explain(config, plan, Connection(IPv6Address("fe80::9")))
    assert not local.balanced and "fe80::/10" in local.steps[0]
    own = explain(config, plan, Connection(IPv6Address("2001:db8:bb::5"),
                                           IPv6Address("2001:db8:103::2")))
    assert own.uplink == "C" and "bound to 2001:db8:103::2" in own.steps[-1]
    off = load_config_text(CONFIG.replace('ipv6 = "nat66"\n', "").replace(
        ', "2001:db8:ff:1::1"', ""), "t.toml")
    untouched = explain(off, decide(off, facts(up(1), up(2), up(3))),
                        Connection(IPv6Address("2001:db8:bb::5")))
    assert not untouched.balanced and "ipv6 = \"off\"" in untouched.steps[0]
