"""Methods proven with real connections through the router, counted at the server."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from labkit.lab import LAN_NET, Lab
from tests.lab.conftest import THREE_ISPS

# Upper 1 % points of the chi-square distribution, by degrees of freedom.
CHI2_1PCT = {1: 6.635, 2: 9.210, 3: 11.345, 4: 13.277}

WriteConfig = Callable[..., str]


def apply(lab: Lab, config: str, *args: str) -> None:
    result = lab.nmbalance("apply", "-c", config, *args)
    assert result.returncode == 0, result.stderr


def chi_square(observed: dict[int, int], weights: dict[int, int]) -> float:
    total = sum(observed.values())
    wsum = sum(weights.values())
    return sum((observed.get(k, 0) - total * w / wsum) ** 2 / (total * w / wsum)
               for k, w in weights.items())


def test_weights_1_3_2_pass_chi_square(router: Lab, write_config: WriteConfig) -> None:
    apply(router, write_config(THREE_ISPS.format(mode="weighted")))
    tally = router.connections(3000)
    assert sum(tally.values()) == 3000 and 0 not in tally, tally
    stat = chi_square(tally, {1: 1, 2: 3, 3: 2})
    assert stat < CHI2_1PCT[2], (tally, stat)


def test_priority_then_selection_moves_new_connections(router: Lab, write_config: WriteConfig) -> None:
    config = write_config(THREE_ISPS.format(mode="priority"))
    apply(router, config)
    assert router.connections(200) == {2: 200}  # ISP2 has the highest weight
    apply(router, config, "ISP1", "ISP3")
    assert router.connections(200) == {3: 200}  # next in priority, at once
    apply(router, config, "ISP1")
    assert router.connections(100) == {1: 100}


def _sources(lab: Lab, count: int) -> list[str]:
    addrs = [f"{LAN_NET}.{10 + i}" for i in range(count)]
    for addr in addrs:
        lab.ip(lab.lan, "addr", "replace", f"{addr}/24", "dev", "eth0")
    return addrs


def test_persistence_keeps_each_source_and_moves_only_the_removed(
    router: Lab, write_config: WriteConfig
) -> None:
    config = write_config(THREE_ISPS.format(mode="persistence") + 'persistence_by = "source"\n'
                          .replace("persistence_by", "#"))
    apply(router, config)
    sources = _sources(router, 24)
    first = {}
    for src in sources:
        tally = router.connections(8, bind=src, concurrency=4)
        assert len(tally) == 1 and 0 not in tally, (src, tally)  # every connection, same ISP
        first[src] = next(iter(tally))
    assert len(set(first.values())) >= 2  # the sources are spread
    victim = max(set(first.values()), key=list(first.values()).count)
    keep = [f"ISP{n}" for n in (1, 2, 3) if n != victim]
    apply(router, config, *keep)
    for src in sources:
        tally = router.connections(4, bind=src, concurrency=2)
        assert len(tally) == 1 and 0 not in tally
        now = next(iter(tally))
        if first[src] == victim:
            assert now != victim
        else:
            assert now == first[src], (src, first[src], now)  # untouched sources stay


def test_enforced_rule_wins_even_while_its_uplink_is_left_out(
    router: Lab, write_config: WriteConfig
) -> None:
    pinned = _sources(router, 1)[0]
    config = write_config(THREE_ISPS.format(mode="weighted") + f"""
[[rule]]
name = "pinned"
src = ["{pinned}/32"]
method = "enforced"
uplinks = ["ISP1"]
""")
    apply(router, config)
    assert router.connections(100, bind=pinned) == {1: 100}
    apply(router, config, "ISP2", "ISP3")
    assert router.connections(100, bind=pinned) == {1: 100}
    others = router.connections(200)
    assert set(others) <= {2, 3} and sum(others.values()) == 200


def test_a_thousand_rules_steer_through_bucketed_maps(
    router: Lab, write_config: WriteConfig
) -> None:
    """Past 128 pieces a rule map is split into buckets by source address; a
    connection found in a bucket goes to its rule's uplink, one that misses there
    goes on to the rules after the map, and one that meets none is balanced."""
    first, second, by_port, plain = _sources(router, 4)

    def rule(name: str, uplink: str, cond: str) -> str:
        return f'[[rule]]\nname = "{name}"\nmethod = "enforced"\nuplinks = ["{uplink}"]\n{cond}\n'

    filler = [rule(f"f{i}", "ISP3", f'src = ["10.{200 + i // 250}.{i % 250}.1/32"]')
              for i in range(1000)]
    config = write_config(THREE_ISPS.format(mode="weighted") + "".join([
        *filler[:500], rule("first", "ISP1", f'src = ["{first}/32"]'),
        *filler[500:], rule("second", "ISP2", f'src = ["{second}/32"]'),
        rule("web", "ISP1", f'src = ["{by_port}/32"]\nproto = "udp"'),
        rule("others", "ISP3", f'src = ["{by_port}/32"]\niif = ["lan0"]'),
    ]))
    apply(router, config)
    listing = json.loads(router.sh(router.rtr, "nft", "-j", "list", "chains", "inet").stdout)
    chains = {c["chain"]["name"] for c in listing["nftables"] if "chain" in c}
    # No rule names ports: one map for every protocol, keyed by protocol and source.
    assert {"rules4_0_0", "rules4_0_7", "rules4_0_next"} <= chains, sorted(chains)
    assert router.connections(50, bind=first) == {1: 50}
    assert router.connections(50, bind=second) == {2: 50}
    # TCP from by_port misses its udp rule in the map, and meets the iif rule after it.
    assert router.connections(50, bind=by_port) == {3: 50}
    spread = router.connections(300, bind=plain)
    assert set(spread) == {1, 2, 3}, spread


def test_host_originated_connections_are_balanced(router: Lab, write_config: WriteConfig) -> None:
    apply(router, write_config(THREE_ISPS.format(mode="weighted")))
    tally = router.connections(600, ns=router.rtr)
    assert set(tally) == {1, 2, 3}, tally
    assert chi_square(tally, {1: 1, 2: 3, 3: 2}) < CHI2_1PCT[2], tally


def test_probe_bound_to_an_uplink_address_leaves_through_it(
    router: Lab, write_config: WriteConfig
) -> None:
    apply(router, write_config(THREE_ISPS.format(mode="weighted")))
    for n in (1, 2, 3):
        router.sh(router.isp(n), "nft", "add table inet count; add chain inet count c "
                  "{ type filter hook forward priority 0; }; add rule inet count c "
                  "icmp type echo-request counter")
    try:
        code = ("import icmplib; r = icmplib.ping('198.51.100.1', count=5, interval=0.05, "
                "timeout=1, source='10.102.0.2', privileged=True); print(r.packets_received)")
        out = router.sh(router.rtr, sys.executable, "-c", code).stdout.strip()
        assert out == "5"
        counts = {}
        for n in (1, 2, 3):
            listing = router.sh(router.isp(n), "nft", "-j", "list", "table", "inet", "count").stdout
            rule = next(i["rule"] for i in json.loads(listing)["nftables"] if "rule" in i)
            counts[n] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        assert counts == {1: 0, 2: 5, 3: 0}
    finally:
        for n in (1, 2, 3):
            router.sh(router.isp(n), "nft", "delete table inet count", check=False)


def test_stream_survives_reapplies_and_removal_of_another_uplink(
    router: Lab, write_config: WriteConfig
) -> None:
    config = write_config(THREE_ISPS.format(mode="weighted"))
    apply(router, config)
    stream, port = router.start_stream(6)
    mark = router.flow_mark(port)
    assert mark in (0x100, 0x200, 0x300)
    mine = mark >> 8
    for _ in range(20):
        apply(router, config)
    others = [n for n in (1, 2, 3) if n != mine]
    apply(router, config, f"ISP{mine}", f"ISP{others[0]}")  # remove another uplink
    assert stream.stdout is not None
    result = json.loads(stream.stdout.readline())
    stream.wait(10)
    assert result["received"] == result["sent"] > 500
    # A lost segment would stall the stream for a retransmission timeout (200 ms at
    # least): below that, nothing was lost, however busy the machine.
    assert result["largest_gap_ms"] < 190, result
    assert router.flow_mark(port) == mark
