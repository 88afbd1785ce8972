"""[[rule]]s compiled into verdict maps keep first-match-wins: the compiled
maps, read back from their nft element text, send every connection, IPv4 or
IPv6, where the rules read one by one (matching.first_unmet, what `explain`
uses) send it."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from nmbalance.config.model import Rule
from nmbalance.core.matching import Connection, first_unmet, rule_matches
from nmbalance.core.rulemap import PROTOCOL_NUMBERS, Classify, RuleMap, compile_rules

NETS = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.1.2.128/25",
        "192.168.0.0/16", "192.168.1.0/24", "0.0.0.0/1", "172.16.0.0/12"]
SPANS = [(80, 80), (443, 443), (1, 1023), (1024, 65535), (8000, 8100), (53, 53), (1, 65535)]
NETS6 = ["2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::1/128", "fd00::/8", "::/1",
         "2001:db8:1:0:8000::/65"]
PROTOS = [None, "tcp", "udp", "sctp", "icmp", "icmpv6"]
OTHER = {"gre": 47}


def _rule(i: int, src: list[str], dst: list[str], proto: str | None,
          sport: list[tuple[int, int]], dport: list[tuple[int, int]], iif: bool) -> Rule | None:
    """A rule of these conditions; None where they could never match (refused)."""
    ported = proto in ("tcp", "udp", "sctp")
    fams = {4, 6}
    for nets in (src, dst):
        if nets:
            fams &= {ip_address(n.split("/")[0]).version for n in nets}
    if proto in ("icmp", "icmpv6"):
        fams &= {4 if proto == "icmp" else 6}
    if not fams:
        return None
    return Rule.model_validate({
        "name": f"r{i}", "src": src, "dst": dst, "proto": proto,
        "sport": [f"{a}-{b}" for a, b in sport] if ported else [],
        "dport": [f"{a}-{b}" for a, b in dport] if ported else [],
        "iif": ["lan0"] if iif else [], "method": "weighted", "uplinks": ["A"]})


RULES = st.lists(st.tuples(
    st.lists(st.sampled_from(NETS + NETS6), max_size=3, unique=True),
    st.lists(st.sampled_from(NETS + NETS6), max_size=3, unique=True),
    st.sampled_from(PROTOS),
    st.lists(st.sampled_from(SPANS), max_size=2, unique=True),
    st.lists(st.sampled_from(SPANS), max_size=3, unique=True),
    st.booleans().map(lambda b: b and False),
), min_size=1, max_size=12)

EDGES = sorted({str(a) for n in NETS for net in [IPv4Network(n)]
                for a in (net.network_address, net.broadcast_address,
                          net.network_address - 1 if int(net.network_address) else net.network_address,
                          net.broadcast_address + 1 if int(net.broadcast_address) < 2**32 - 1
                          else net.broadcast_address)})
EDGES6 = sorted({str(a) for n in NETS6 for net in [IPv6Network(n)]
                 for a in (net.network_address, net.broadcast_address,
                           net.network_address - 1 if int(net.network_address)
                           else net.network_address,
                           net.broadcast_address + 1 if int(net.broadcast_address) < 2**128 - 1
                           else net.broadcast_address)})
PORTS = sorted({p for lo, hi in SPANS for p in (lo, hi, max(lo - 1, 0), min(hi + 1, 65535))})


def _connection(v6: bool, src: str, dst: str, proto: str, sport: int, dport: int,
                iif: str) -> Connection:
    ported = proto in ("tcp", "udp", "sctp")
    if proto in ("icmp", "icmpv6"):
        proto = "icmpv6" if v6 else "icmp"
    return Connection(dst=ip_address(dst), src=ip_address(src), proto=proto,
                      sport=sport if ported else None, dport=dport if ported else None,
                      iif=iif)


CONNECTIONS = st.one_of(*(st.builds(
    _connection, st.just(v6), st.sampled_from(edges), st.sampled_from(edges),
    st.sampled_from(["tcp", "udp", "sctp", "icmp", "gre"]),
    st.sampled_from(PORTS), st.sampled_from(PORTS), st.sampled_from(["lan0", "lan1"]))
    for v6, edges in ((False, EDGES), (True, EDGES6))))


def _span(text: str, addr: bool) -> tuple[int, int]:
    value = (lambda v: int(ip_address(v))) if addr else int
    lo, _, hi = text.partition("-")
    return value(lo), value(hi or lo)


def _key(m: RuleMap, c: Connection) -> tuple[list[int], list[bool]]:
    """The packet's values of the map's key, field by field, and which are addresses."""
    proto = PROTOCOL_NUMBERS.get(c.proto or "", OTHER.get(c.proto or "", 0))
    values = {"meta l4proto": proto, "saddr": int(c.src or 0), "daddr": int(c.dst),
              "th sport": c.sport or 0, "th dport": c.dport or 0}
    fields = [f.removeprefix("ip6 ").removeprefix("ip ") for f in m.key.split(" . ")]
    return [values[f] for f in fields], [f.endswith("addr") for f in fields]


def _lookup(m: RuleMap, key: list[int], addressed: list[bool]) -> str | None:
    """The target of the one element of `m` that holds `key`, if any."""
    hits = []
    for element in m.elements:
        parts, _, target = element.partition(" : goto ")
        spans = [_span(p, a) for p, a in zip(parts.split(" . "), addressed, strict=True)]
        if all(lo <= k <= hi for k, (lo, hi) in zip(key, spans, strict=True)):
            hits.append(target)
    assert len(hits) <= 1, f"overlapping elements in {m.name}: {hits}"
    return hits[0] if hits else None


def _verdict(classify: Classify, rules: dict[str, Rule], c: Connection) -> str:
    """What the compiled classify chain does with `c`, read as the kernel would."""
    fits = {"tcp", "udp", "sctp"}
    for step in classify.steps:
        if isinstance(step, RuleMap):
            if step.family != f"ipv{c.dst.version}":
                continue
            if step.ported is not None and step.ported != (c.proto in fits):
                continue  # a port key only for port protocols: the other map has the rest
            key, addressed = _key(step, c)
            hit = _lookup(step, key, addressed)
            if step.index:  # the bucket for the key's value of the index's field
                field = step.key.split(" . ").index(step.index.key)
                bucket = _lookup(step.index, [key[field]], [addressed[field]])
                inner = next((b for b in step.buckets if b.name == bucket), None)
                found = _lookup(inner, key, addressed) if inner else None
                assert hit is None or found is None, f"{c} in {step.name} twice"
                hit = hit or found
            if hit:
                return hit
        else:
            match, target = step
            rule = rules[target]
            assert match in rule_matches(rule)
            # An nft rule of one family's addresses is met by that family only.
            family = "ip6 " if "ip6 " in match else "ip " if "ip " in match else None
            if family and family != ("ip6 " if c.dst.version == 6 else "ip "):
                continue
            if first_unmet(rule, c) is None:
                return target
    return "pick_default"


def _expected(rules: list[Rule], c: Connection) -> str:
    for i, rule in enumerate(rules):
        if first_unmet(rule, c) is None:
            return f"pick_{i}"
    return "pick_default"


@settings(max_examples=300, deadline=None)
@given(RULES, st.lists(CONNECTIONS, min_size=20, max_size=60), st.integers(0, 3))
def test_first_match_wins(specs: list[tuple], connections: list[Connection], iifs: int) -> None:
    made = [_rule(i, *spec[:5], iif=(i % 4 == 3 and iifs > 0)) for i, spec in enumerate(specs)]
    rules = [r for r in made if r is not None]
    targets = [(r, f"pick_{i}") for i, r in enumerate(rules)]
    by_target = dict((t, r) for r, t in targets)
    # limit 3: rules that cut into many boxes stay single rules; bucket 2: maps are
    # split into buckets of about two elements.
    for limit, bucket in ((4096, 128), (3, 128), (4096, 2)):
        classify = compile_rules(targets, ipv6=True, limit=limit, bucket=bucket)
        for c in connections:
            assert _verdict(classify, by_target, c) == _expected(rules, c), c


def _made(*args: object) -> Rule:
    rule = _rule(*args)  # type: ignore[arg-type]
    assert rule is not None
    return rule


def test_interfaces_and_long_lists_stay_rules_in_place() -> None:
    web = _made(0, [], [], "tcp", [], [(80, 80)], False)
    lan = _made(1, [], [], None, [], [], True)
    many = Rule.model_validate({"name": "many", "method": "weighted", "uplinks": ["A"],
                                # not adjacent, so not merged: 80 x 80 boxes
                                "src": [f"10.{2 * i}.0.0/16" for i in range(80)],
                                "dst": [f"172.16.{2 * i}.0/24" for i in range(80)]})
    dns = _made(3, [], [], "udp", [], [(53, 53)], False)
    steps = compile_rules([(web, "pick_web"), (lan, "pick_lan"), (many, "pick_many"),
                           (dns, "pick_dns")], ipv6=False).steps
    kinds = [s.name if isinstance(s, RuleMap) else s[1] for s in steps]
    assert kinds == ["rules4p_0", "pick_lan", "pick_many", "rules4p_3"]


def test_a_thousand_rules_are_one_lookup_into_buckets_of_128() -> None:
    rules = [(_made(i, [], [f"10.{i // 256}.{i % 256}.0/24"], "tcp", [], [(443, 443)], False),
              f"pick_{i % 3}") for i in range(1000)]
    steps = compile_rules(rules, ipv6=False).steps
    assert len(steps) == 1 and isinstance(steps[0], RuleMap)
    m = steps[0]
    assert m.index is not None and m.index.key == "ip daddr" and not m.elements
    assert [len(b.elements) for b in m.buckets] == [128] * 7 + [104]
    assert m.index.elements[0] == "0.0.0.0-10.0.127.255 : goto rules4p_0_0"
    assert m.index.elements[-1] == "10.3.128.0-255.255.255.255 : goto rules4p_0_7"


def test_a_piece_across_bucket_boundaries_is_cut_or_kept_wide() -> None:
    ssh = _made(0, [], ["10.0.0.0/23"], "tcp", [], [(22, 22)], False)
    web = _made(1, [], ["10.0.0.0/16"], "tcp", [], [(80, 80)], False)
    tls = [_made(2 + i, [], [f"10.0.{i}.0/24"], "tcp", [], [(443, 443)], False)
           for i in range(6)]
    rules = [(r, f"pick_{r.name}") for r in [ssh, web, *tls]]
    (m,) = compile_rules(rules, ipv6=False, bucket=3).steps
    assert isinstance(m, RuleMap) and m.index is not None
    # Boundaries at every third start along ip daddr: 10.0.1.0 and 10.0.4.0.
    assert [e.split(" : ")[0] for e in m.index.elements] == [
        "0.0.0.0-10.0.0.255", "10.0.1.0-10.0.3.255", "10.0.4.0-255.255.255.255"]
    # Keyed by what the rules narrow: protocol, destination, destination port.
    assert m.key == "meta l4proto . ip daddr . th dport"
    # Web crosses both: it stays whole, in the map looked up beside the index.
    assert m.elements == ("6 . 10.0.0.0-10.0.255.255 . 80 : goto pick_r1",)
    # Ssh crosses one: each bucket holds its part.
    assert "6 . 10.0.0.0-10.0.0.255 . 22 : goto pick_r0" in m.buckets[0].elements
    assert "6 . 10.0.1.0-10.0.1.255 . 22 : goto pick_r0" in m.buckets[1].elements
    assert [len(b.elements) for b in m.buckets] == [2, 4, 2]


def test_each_family_has_its_own_maps_and_keys() -> None:
    video = _made(0, [], ["203.0.113.0/24", "2001:db8:aa::/48"], "tcp", [], [(443, 443)], False)
    web = _made(1, [], [], "tcp", [], [(80, 80)], False)
    steps = compile_rules([(video, "pick_video"), (web, "pick_web")], ipv6=True).steps
    maps = {s.name: s for s in steps if isinstance(s, RuleMap)}
    assert set(maps) == {"rules4p_0", "rules6p_0"}
    six = maps["rules6p_0"]
    assert six.family == "ipv6"
    # Only what some rule narrows: no source address, no source port.
    assert six.key == "meta l4proto . ip6 daddr . th dport"
    assert six.type == "inet_proto . ipv6_addr . inet_service"
    assert ("6 . 2001:db8:aa::-2001:db8:aa:ffff:ffff:ffff:ffff:ffff . 443 : goto pick_video"
            ) in six.elements
    # Without addresses in any rule, the key leaves them out.
    alone = compile_rules([(web, "pick_web")], ipv6=True).steps
    assert [(m.name, m.key) for m in alone if isinstance(m, RuleMap)] == [
        ("rules4p_0", "meta l4proto . th dport"),
        ("rules6p_0", "meta l4proto . th dport")]


def test_rules_without_ports_are_one_map_for_every_protocol() -> None:
    lan = _made(0, ["10.250.0.0/24"], [], None, [], [], False)
    steps = compile_rules([(lan, "pick_lan")], ipv6=False).steps
    assert [(m.name, m.key, m.ported, m.elements) for m in steps if isinstance(m, RuleMap)] == [
        ("rules4_0", "meta l4proto . ip saddr", None,
         ("0-255 . 10.250.0.0-10.250.0.255 : goto pick_lan",))]


def test_a_rule_of_any_protocol_is_one_element_in_each_map() -> None:
    lan = _made(0, ["10.250.0.0/24"], [], None, [], [], False)
    web = _made(1, [], [], "tcp", [], [(80, 80)], False)
    steps = compile_rules([(lan, "pick_lan"), (web, "pick_web")], ipv6=False).steps
    assert [(m.name, m.ported, m.elements) for m in steps if isinstance(m, RuleMap)] == [
        ("rules4p_0", True, ("0-255 . 10.250.0.0-10.250.0.255 . 0-65535 : goto pick_lan",
                             "6 . 0.0.0.0-10.249.255.255 . 80 : goto pick_web",
                             "6 . 10.250.1.0-255.255.255.255 . 80 : goto pick_web")),
        ("rules4o_0", False, ("0-255 . 10.250.0.0-10.250.0.255 : goto pick_lan",))]
