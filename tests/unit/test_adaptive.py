"""The adaptive methods' pure core: weights from load, capacity and latency,
with their hysteresis, and the configured weights when a figure is missing."""

from __future__ import annotations

from nmbalance.core.adaptive import (
    HIGH_WATER,
    LATENCY_DWELL,
    OVERFLOW_DWELL,
    Capacity,
    GroupState,
    Load,
    Member,
    least_used,
    lowest_latency,
    overflow,
)

CAP = Capacity(100.0, 20.0)


def member(name: str, down: float | None = None, up: float = 0.0, weight: float = 1.0,
           latency: float | None = None) -> Member:
    load = Load(down, up) if down is not None else None
    return Member(name, weight, CAP, load, latency)


def test_overflow_spills_over_and_comes_back_with_hysteresis() -> None:
    state = GroupState()
    choice = overflow([member("A", 50), member("B", 0)], state, 0.0)
    assert choice.weights == {"A": 1.0} and choice.measured
    choice = overflow([member("A", 90), member("B", 0)], choice.state, 1.0)
    assert choice.weights == {"B": 1.0} and "A 90% full" in choice.why
    # Either direction counts: uploads fill A's 20 Mbit/s first.
    assert overflow([member("A", 10, up=18), member("B", 0)], GroupState(), 0.0).weights == {
        "B": 1.0}
    # Between the marks, or too soon: still full.
    assert overflow([member("A", 70), member("B", 0)], choice.state, 1.5).weights == {"B": 1.0}
    assert overflow([member("A", 10), member("B", 0)], choice.state,
                    1.0 + OVERFLOW_DWELL / 2).weights == {"B": 1.0}
    back = overflow([member("A", 10), member("B", 0)], choice.state, 1.0 + OVERFLOW_DWELL)
    assert back.weights == {"A": 1.0} and back.state.full == {}
    # All full: the least loaded.
    assert overflow([member("A", 95), member("B", 85)], GroupState(), 0.0).weights == {"B": 1.0}
    assert HIGH_WATER == 0.8


def test_overflow_without_figures_uses_weights_and_says_so() -> None:
    choice = overflow([member("A", None, weight=3), member("B", 5)], GroupState(), 0.0)
    assert choice.weights == {"A": 3, "B": 1} and not choice.measured
    assert "no load figure yet for A" in choice.why


def test_least_used_spreads_by_free_capacity() -> None:
    choice = least_used([member("A", 75, up=5), member("B", 25, up=19)], GroupState())
    assert choice.weights == {"A": 15.0, "B": 1.0}  # the scarcer direction counts
    assert least_used([member("A", 120), member("B", 100)], GroupState()).weights == {
        "A": 1.0, "B": 1.0}  # all saturated: alike
    assert not least_used([member("A"), member("B", 1)], GroupState()).measured


def test_lowest_latency_needs_a_margin_for_a_dwell() -> None:
    state = GroupState()
    first = lowest_latency([member("A", latency=30), member("B", latency=40)], state, 0.0)
    assert first.weights == {"A": 1.0}
    # 1 ms apart never swaps, however long.
    close = first
    for t in range(100):
        close = lowest_latency([member("A", latency=30), member("B", latency=29)],
                               close.state, float(t))
        assert close.weights == {"A": 1.0}
    # 5 ms but under 10 %: no swap either (both margins must hold).
    assert lowest_latency([member("A", latency=100), member("B", latency=94)], first.state,
                          50.0).weights == {"A": 1.0}
    fast = lowest_latency([member("A", latency=30), member("B", latency=10)], first.state, 10.0)
    assert fast.weights == {"A": 1.0} and fast.state.challenger == ("B", 10.0)
    fast = lowest_latency([member("A", latency=30), member("B", latency=10)], fast.state,
                          10.0 + LATENCY_DWELL)
    assert fast.weights == {"B": 1.0} and "B is the fastest" in fast.why
    # The current one gone: the best at once.
    assert lowest_latency([member("A", latency=50)], fast.state, 13.0).weights == {"A": 1.0}
    assert not lowest_latency([member("A"), member("B")], GroupState(), 0.0).measured


def test_the_load_meter_smooths_rates_and_survives_a_counter_reset() -> None:
    from nmbalance.core.adaptive import Counters, Meter, metered

    meter = metered(Meter(), Counters(0, 0, 0.0))
    assert meter.load is None
    meter = metered(meter, Counters(12_500_000, 1_250_000, 1.0))  # 100 and 10 Mbit/s
    assert meter.load == Load(100.0, 10.0)
    meter = metered(meter, Counters(12_500_000, 1_250_000, 2.0), tau=1.0)  # idle a second
    assert meter.load is not None and 30 < meter.load.down_mbps < 40  # e^-1 of it left
    reset = metered(meter, Counters(10, 10, 3.0))
    assert reset.load == meter.load and reset.last == Counters(10, 10, 3.0)


def test_measured_weights_replace_the_configured_ones_in_the_plan() -> None:
    from ipaddress import IPv4Address, IPv4Interface

    from nmbalance.config.load import load_text
    from nmbalance.core.decide import decide
    from nmbalance.core.facts import Facts, UplinkFacts

    config = load_text('mode = "overflow"\n' + "".join(
        f'[[uplink]]\nname = "U{n}"\ninterface = "wan{n}"\nweight = {4 - n}\ncapacity_mbps = 50\n'
        for n in (1, 2, 3)), "c.toml").config
    facts = Facts(uplinks=tuple(UplinkFacts(
        name=f"U{n}", interface=f"wan{n}", present=True, carrier=True,
        addresses=(IPv4Interface(f"10.10{n}.0.2/24"),), gateway=IPv4Address(f"10.10{n}.0.1"))
        for n in (1, 2, 3)))
    plain = decide(config, facts)
    assert any("needs the daemon's measurements" in w for w in plain.warnings)
    plan = decide(config, facts, measured={"default": {"U2": 1.0}})
    assert [u.share for u in plan.uplinks] == [0.0, 1.0, 0.0] and not plan.warnings
    # The measured choice gone: the configured weights rather than nothing.
    gone = decide(config, Facts(uplinks=(facts.uplinks[0], UplinkFacts(name="U2"),
                                         facts.uplinks[2])), measured={"default": {"U2": 1.0}})
    assert sum(u.share for u in gone.uplinks) > 0.99


def test_a_rules_method_is_measured_beside_a_weighted_mode() -> None:
    from nmbalance.config.load import load_text
    from nmbalance.core.adaptive import choose, measured_groups

    config = load_text(
        "".join(f'[[uplink]]\nname = "U{n}"\ninterface = "wan{n}"\ncapacity_mbps = 10\n'
                f'weight = {n}\nprobe = ["198.51.100.{n}"]\n' for n in (1, 2, 3))
        + '[[rule]]\nname = "bulk"\ndport = [443]\nproto = "tcp"\nmethod = "overflow"\n'
          'uplinks = ["U1", "U3"]\n'
          '[[rule]]\nname = "voip"\nproto = "udp"\nmethod = "lowest-latency"\n'
          'uplinks = ["U2", "U3"]\n', "c.toml").config
    assert measured_groups(config) == [("Rbulk", "overflow", ["U3", "U1"]),
                                       ("Rvoip", "lowest-latency", ["U3", "U2"])]
    loads = {n: Load(9.5 if n == "U3" else 1.0, 0.0) for n in ("U1", "U2", "U3")}
    choices, states = choose(config, {"U1", "U2", "U3"}, loads, {"U2": 5.0, "U3": 50.0}, {}, 0.0)
    assert choices["Rbulk"].weights == {"U1": 1.0}  # U3 first by weight, but full
    assert choices["Rvoip"].weights == {"U2": 1.0}
    assert set(states) == {"Rbulk", "Rvoip"} and "default" not in choices


def test_a_retune_sends_only_the_sets_that_changed() -> None:
    from nmbalance.core.restructure import changed_blocks

    before = ("flush set inet t live\nadd element inet t live { 0x100, 0x200 }\n"
              "flush map inet t w_default\nadd element inet t w_default { 0-499 : goto up_A }\n"
              "flush set inet t masq\n")
    after = before.replace("0-499 : goto up_A", "0-999 : goto up_B")
    assert changed_blocks(before, after) == (
        "flush map inet t w_default\nadd element inet t w_default { 0-999 : goto up_B }\n")
    assert changed_blocks(before, before) == ""
    assert changed_blocks("", before) == before  # nothing known: everything
    emptied = before.replace("add element inet t live { 0x100, 0x200 }\n", "")
    assert changed_blocks(before, emptied) == "flush set inet t live\n"
