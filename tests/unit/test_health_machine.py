"""The health state machine, driven with plain values and an explicit clock."""

from __future__ import annotations

import itertools

import pytest

from nmbalance.config.model import HealthSettings
from nmbalance.core.health_machine import (
    ALLOWED,
    LONG_DOWN,
    LinkState,
    Lost,
    Observation,
    Phase,
    Policy,
    Reply,
    Tick,
    Tracker,
    Transition,
    deadline,
    step,
)


def policy(probed: bool = True, **health: object) -> Policy:
    return Policy.from_config(HealthSettings.model_validate(health), probed)


def run(p: Policy, events: list[tuple[float, Observation]], t: Tracker | None = None
        ) -> tuple[Tracker, list[tuple[float, Transition]]]:
    t = t or Tracker()
    seen = []
    for now, obs in events:
        t, moved = step(p, t, obs, now)
        seen += [(now, m) for m in moved]
    return t, seen


def test_down_after_successive_losses_with_reason() -> None:
    p = policy()
    t, seen = run(p, [(1.0, Lost("to 192.0.2.1"))])
    assert t.phase is Phase.UP and not seen  # 1 of a 20-probe window: 5%, not over 5%
    t, seen = run(p, [(2.0, Lost("to 192.0.2.1"))], t)
    assert t.phase is Phase.DEGRADED and seen[0][1].reason == "loss 10% over the last 2 probes"
    t, seen = run(p, [(3.0, Lost("to 192.0.2.1"))], t)
    assert t.phase is Phase.DOWN
    assert seen == [(3.0, Transition(Phase.DEGRADED, Phase.DOWN,
                                     "3 probes lost in a row to 192.0.2.1", "down"))]


def test_heavy_loss_takes_an_uplink_down_within_a_few_rounds() -> None:
    p = policy()
    events: list[tuple[float, Observation]] = []
    for i in range(10):
        events += [(3 * i, Lost("x")), (3 * i + 1, Lost("x")), (3 * i + 2, Reply(10.0))]
    _, seen = run(p, events, Tracker())
    # Never 3 in a row, but 3 of the last 2 x 3 probes lost is heavy loss.
    assert [m.phase for _, m in seen] == [Phase.DEGRADED, Phase.DOWN]
    assert seen[1] == (3, Transition(Phase.DEGRADED, Phase.DOWN,
                                     "3 of the last 4 probes lost x", "down"))


@pytest.mark.parametrize("first_lost", [True, False])
def test_half_the_probes_lost_is_out_by_the_sixth_round(first_lost: bool) -> None:
    p = policy()
    t = Tracker()
    for i in range(6):
        lost = (i % 2 == 0) == first_lost
        t, _ = step(p, t, Lost("x") if lost else Reply(5.0), float(i))
    assert t.phase is Phase.DOWN


def test_loss_rate_alone_takes_an_uplink_down() -> None:
    p = policy()
    events: list[tuple[float, Observation]] = []
    for i in range(10):
        events += [(3 * i, Lost("x")), (3 * i + 1, Reply(10.0)), (3 * i + 2, Reply(10.0))]
    _, seen = run(p, events, Tracker())
    # Never heavy (at most 2 of any 6 lost), but 4 lost of a 20-probe window is
    # over max_packet_loss (15%).
    assert [m.phase for _, m in seen] == [Phase.DEGRADED, Phase.DOWN]
    assert seen[1] == (9, Transition(Phase.DEGRADED, Phase.DOWN,
                                     "loss 20% over the last 10 probes (max 15%)", "down"))


def test_recovery_needs_replies_in_a_row_then_the_hold_time() -> None:
    p = policy(min_successive_pkts_rcvd=5, hold_time=5)
    t, _ = run(p, [(0.0, LinkState(False, "no carrier")), (1.0, LinkState(True))])
    assert t.phase is Phase.DOWN
    t, seen = run(p, [(3.0 + i, Reply(5.0)) for i in range(4)], t)
    assert t.phase is Phase.DOWN and not seen
    t, seen = run(p, [(7.0, Reply(5.0))], t)
    assert t.phase is Phase.RECOVERING and t.phase.health.value == "down"
    assert seen[0][1].reason == "5 replies in a row, loss 0% over the last 5 probes; holding 5 s"
    assert deadline(p, t) == 12.0
    t, seen = run(p, [(11.9, Tick())], t)
    assert t.phase is Phase.RECOVERING
    t, seen = run(p, [(12.0, Tick())], t)
    assert t.phase is Phase.UP and seen[0][1].reason == "healthy for 5 s"


def test_recovery_also_needs_the_window_loss_under_min_packet_loss() -> None:
    p = policy(min_successive_pkts_rcvd=5, hold_time=0)
    t, _ = run(p, [(float(i), Lost("x")) for i in range(3)])
    assert t.phase is Phase.DOWN
    # 5 replies in a row are not enough while 3 of the last 20 probes were lost...
    t, seen = run(p, [(3.0 + i, Reply(5.0)) for i in range(18)], t)
    assert t.phase is Phase.DOWN and not seen
    # ...only once no more than min_packet_loss (5%: one probe) of them is.
    t, seen = run(p, [(21.0, Reply(5.0))], t)
    assert [m.phase for _, m in seen] == [Phase.RECOVERING, Phase.UP]
    assert seen[0][1].reason.startswith("19 replies in a row, loss 5% over the last 20 probes")
    assert t.window.count(False) == 1  # the history is kept, not cleared on recovery


def test_a_lossy_uplink_is_not_let_back_by_lucky_replies() -> None:
    p = policy(min_successive_pkts_rcvd=3, hold_time=0)
    t, _ = run(p, [(float(i), Lost("x")) for i in range(3)])
    seen_all = []
    now = 3.0
    for _ in range(40):  # 3 replies in a row, then a loss: 25 % loss for ever
        t, seen = run(p, [(now + i, Reply(5.0)) for i in range(3)] + [(now + 3, Lost("x"))], t)
        seen_all += seen
        now += 4
    assert t.phase is Phase.DOWN
    assert [m.event for _, m in seen_all] == [LONG_DOWN]  # never recovering


def test_a_loss_while_recovering_starts_over() -> None:
    p = policy(min_successive_pkts_rcvd=2, hold_time=5)
    t, _ = run(p, [(0.0, LinkState(False, "no carrier")), (1.0, LinkState(True)),
                   (3.0, Reply(1)), (4.0, Reply(1))])
    assert t.phase is Phase.RECOVERING
    t, seen = run(p, [(5.0, Lost("to 198.51.100.1"))], t)
    assert t.phase is Phase.DOWN and seen[0][1].reason == "probe lost while recovering to 198.51.100.1"


def test_probes_while_the_link_is_gone_are_not_counted() -> None:
    p = policy()
    t, _ = run(p, [(0.0, LinkState(False, "no carrier"))] +
               [(1.0 + i, Lost("x")) for i in range(10)])
    assert t.window == () and t.phase is Phase.DOWN


def test_carrier_loss_is_immediate_and_carrier_alone_recovers_unprobed_uplinks() -> None:
    p = policy(probed=False, hold_time=2)
    t, seen = run(p, [(0.5, LinkState(False, "no carrier"))])
    assert t.phase is Phase.DOWN and seen[0][1].reason == "no carrier"
    t, seen = run(p, [(1.0, LinkState(True))], t)
    assert t.phase is Phase.RECOVERING
    t, seen = run(p, [(3.0, Tick())], t)
    assert t.phase is Phase.UP


def test_probed_uplink_waits_for_replies_after_carrier_returns() -> None:
    p = policy(min_successive_pkts_rcvd=2, hold_time=0)
    t, _ = run(p, [(0.0, LinkState(False, "no carrier")), (1.0, LinkState(True))])
    assert t.phase is Phase.DOWN
    t, seen = run(p, [(2.0, Reply(1)), (3.0, Reply(1))], t)
    assert [m.phase for _, m in seen] == [Phase.RECOVERING, Phase.UP]  # hold 0: at once


def test_flapping_doubles_the_hold_up_to_the_cap() -> None:
    p = policy(probed=False, hold_time=5, flap_window=120, max_hold_time=30)
    t = Tracker()
    holds = []
    now = 0.0
    for _ in range(6):
        t, _ = step(p, t, LinkState(False, "no carrier"), now)
        t, _ = step(p, t, LinkState(True), now + 0.5)
        holds.append(t.hold)
        now = t.since + t.hold
        t, _ = step(p, t, Tick(), now)
        assert t.phase is Phase.UP
        now += 1
    assert holds == [5, 10, 20, 30, 30, 30]
    # Long after the last flap the hold is back to its base.
    t, _ = step(p, t, LinkState(False, "no carrier"), now + 1000)
    t, _ = step(p, t, LinkState(True), now + 1000.5)
    assert t.hold == 5


def test_a_fast_flapping_link_changes_health_a_bounded_number_of_times() -> None:
    p = policy(probed=False, hold_time=5)
    t = Tracker()
    changes = 0
    for i in range(50):  # every 200 ms for 10 s
        before = t.phase.health
        t, _ = step(p, t, LinkState(i % 2 == 1, "no carrier"), i * 0.2)
        changes += before != t.phase.health
    assert changes == 1  # down once; never up again while it keeps flapping


def test_long_down_is_reported_once_per_outage() -> None:
    p = policy(long_down_time=60)
    t, _ = run(p, [(0.0, LinkState(False, "no carrier"))])
    assert deadline(p, t) == 60.0
    t, seen = run(p, [(30.0, Tick()), (60.0, Tick()), (90.0, Tick())], t)
    assert [(now, m.event) for now, m in seen] == [(60.0, LONG_DOWN)]
    assert deadline(p, t) is None


def test_degraded_on_latency_with_hysteresis() -> None:
    p = policy(max_latency_ms=100, loss_window=4)
    t, seen = run(p, [(float(i), Reply(150.0)) for i in range(3)])
    assert t.phase is Phase.DEGRADED and "median round trip 150 ms" in seen[0][1].reason
    assert t.phase.health.value == "degraded"
    t, seen = run(p, [(10.0 + i, Reply(90.0)) for i in range(4)], t)
    assert t.phase is Phase.DEGRADED  # 90 is under 100 but over the 80 to return
    t, seen = run(p, [(20.0 + i, Reply(50.0)) for i in range(4)], t)
    assert t.phase is Phase.UP


def test_degraded_on_moderate_loss() -> None:
    p = policy(min_packet_loss=5, max_packet_loss=50, max_successive_pkts_lost=3, loss_window=20)
    events: list[tuple[float, Observation]] = [(float(i), Reply(1.0)) for i in range(17)]
    events += [(17.0, Lost("x")), (18.0, Reply(1.0))]
    t, _ = run(p, events)
    assert t.phase is Phase.UP  # 1 of 19 is 5%: not over min_packet_loss
    t, seen = run(p, [(19.0, Lost("x")), (20.0, Reply(1.0))], t)
    assert t.phase is Phase.DEGRADED and seen[0][1].reason == "loss 10% over the last 20 probes"


def test_every_transition_is_in_the_table() -> None:
    p = policy(min_successive_pkts_rcvd=1, hold_time=1, max_latency_ms=50, loss_window=4)
    observations: list[Observation] = [
        Reply(10), Reply(90), Lost("x"), LinkState(False, "gone"), LinkState(True), Tick()]
    for combo in itertools.product(observations, repeat=4):
        t = Tracker()
        for i, obs in enumerate(combo):
            t, moved = step(p, t, obs, float(i))
            for m in moved:
                assert m.event == LONG_DOWN or m.phase in ALLOWED[m.previous]


def test_the_table_rejects_what_it_does_not_list() -> None:
    from nmbalance.core.health_machine import _move

    with pytest.raises(ValueError, match="down -> up"):
        _move(Tracker(phase=Phase.DOWN), Phase.UP, 0.0, "")
