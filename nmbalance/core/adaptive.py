"""Weights from measurements: overflow, least-used and lowest-latency
(DESIGN.md "Inputs of the adaptive methods").

Pure: the caller passes the measurements, the time and the state the last
call returned, and gets the weights for one group of uplinks, the new state
and a phrase saying what drove the choice. With a figure missing for an
uplink the group falls back to the configured weights and says so: a
method never pretends to measure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nmbalance.config.model import Config
from nmbalance.core.decide import rule_group_leaders
from nmbalance.core.ruleset import DEFAULT_GROUP

HIGH_WATER = 0.8  # overflow: an uplink this loaded (either direction) is full
LOW_WATER = 0.6  # ... and takes new connections again below this
OVERFLOW_DWELL = 2.0  # seconds an uplink stays full at least, so a burst can't flap it
LATENCY_MARGIN_MS = 5.0  # lowest-latency: a challenger must be this much faster
LATENCY_MARGIN = 0.10  # ... and this much faster relatively (both: AND, not OR)
LATENCY_DWELL = 2.0  # ... for this long before it takes over
LOAD_TAU = 0.6  # seconds: the load's smoothing (a step shows as 80 % after ~1 s)
MEASURED = ("overflow", "least-used", "lowest-latency")  # weights from figures


@dataclass(frozen=True)
class Load:
    """An uplink's smoothed throughput, Mbit/s (link counters: L2 bytes)."""

    down_mbps: float
    up_mbps: float


@dataclass(frozen=True)
class Capacity:
    down_mbps: float | None
    up_mbps: float | None


@dataclass(frozen=True)
class Member:
    """One uplink of a group, in priority order (higher weight first)."""

    name: str
    weight: float
    capacity: Capacity
    load: Load | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class GroupState:
    full: Mapping[str, float] = field(default_factory=dict)  # overflow: name -> since
    choice: str | None = None  # lowest-latency: the current one
    challenger: tuple[str, float] | None = None  # ... and who has been faster since when


@dataclass(frozen=True)
class Choice:
    weights: dict[str, float]
    state: GroupState
    why: str  # the figures behind it, for status and the log
    measured: bool  # False: the configured weights, for want of figures

    @property
    def key(self) -> str:
        """What the choice is, leaving out the figures: a change of it is news (logged
        at INFO); a change of figures alone is not. Shares count in steps of 10 %."""
        if not self.measured:
            return "weights"
        total = sum(self.weights.values()) or 1.0
        return ",".join(f"{n}:{round(10 * w / total)}" for n, w in sorted(self.weights.items()))


def utilisation(member: Member) -> float | None:
    """Load over capacity in the busier direction; None without both figures."""
    if member.load is None:
        return None
    shares = [load / cap for load, cap in ((member.load.down_mbps, member.capacity.down_mbps),
                                           (member.load.up_mbps, member.capacity.up_mbps))
              if cap]
    return max(shares) if shares else None


def _weighted(members: Sequence[Member], why: str, state: GroupState) -> Choice:
    return Choice({m.name: m.weight for m in members}, state, why, measured=False)


def overflow(members: Sequence[Member], state: GroupState, now: float) -> Choice:
    """The first uplink in order that is not full takes every new connection."""
    if not members:
        return Choice({}, state, "no usable uplink", measured=True)
    use = {m.name: utilisation(m) for m in members}
    missing = [name for name, u in use.items() if u is None]
    if missing:
        return _weighted(members, f"no load figure yet for {', '.join(missing)}: by weight",
                         state)
    full = dict(state.full)
    for m in members:
        u = use[m.name]
        assert u is not None
        if m.name in full:
            if u < LOW_WATER and now - full[m.name] >= OVERFLOW_DWELL:
                del full[m.name]
        elif u > HIGH_WATER:
            full[m.name] = now
    full = {name: since for name, since in full.items() if name in use}
    taking = next((m for m in members if m.name not in full), None)
    if taking is None:  # every one full: the least loaded
        taking = min(members, key=lambda m: use[m.name] or 0.0)
    figures = ", ".join(f"{m.name} {use[m.name]:.0%}{' full' if m.name in full else ''}"
                        for m in members)
    return Choice({taking.name: 1.0}, GroupState(full=full), f"{taking.name} takes new "
                  f"connections ({figures} of capacity)", measured=True)


def least_used(members: Sequence[Member], state: GroupState) -> Choice:
    """Shares in proportion to free capacity (the scarcer direction), so a burst of
    new connections spreads rather than herding onto one uplink."""
    free: dict[str, float] = {}
    for m in members:
        if m.load is None:
            return _weighted(members, f"no load figure yet for {m.name}: by weight", state)
        spare = [cap - load for load, cap in ((m.load.down_mbps, m.capacity.down_mbps),
                                              (m.load.up_mbps, m.capacity.up_mbps)) if cap]
        free[m.name] = max(min(spare), 0.0) if spare else 0.0
    if free and not any(free.values()):  # all saturated: alike
        free = dict.fromkeys(free, 1.0)
    why = ", ".join(f"{name} {f:.1f} Mbit/s free" for name, f in free.items())
    return Choice(free, state, why or "no usable uplink", measured=True)


def lowest_latency(members: Sequence[Member], state: GroupState, now: float) -> Choice:
    """The fastest uplink by smoothed probe round trip; a challenger takes over only
    after being faster by LATENCY_MARGIN_MS and LATENCY_MARGIN for LATENCY_DWELL."""
    timed = {m.name: m.latency_ms for m in members if m.latency_ms is not None}
    if not timed:
        return _weighted(members, "no round trip measured yet: by weight", state)
    best = min(timed, key=lambda name: timed[name])
    current = state.choice if state.choice in timed else None
    challenger = None
    if current is None:
        current = best
    elif best != current:
        faster = timed[current] - timed[best]
        if faster >= LATENCY_MARGIN_MS and faster >= LATENCY_MARGIN * timed[current]:
            since = (state.challenger[1] if state.challenger and state.challenger[0] == best
                     else now)
            if now - since >= LATENCY_DWELL:
                current = best
            else:
                challenger = (best, since)
    figures = ", ".join(f"{name} {ms:.1f} ms" for name, ms in sorted(timed.items()))
    return Choice({current: 1.0}, GroupState(choice=current, challenger=challenger),
                  f"{current} is the fastest ({figures})", measured=True)


@dataclass(frozen=True)
class Counters:
    """An interface's byte counters at one moment."""

    rx_bytes: int
    tx_bytes: int
    at: float


@dataclass(frozen=True)
class Meter:
    last: Counters | None = None
    load: Load | None = None  # smoothed; None until two samples


def metered(meter: Meter, sample: Counters, tau: float = LOAD_TAU) -> Meter:
    """The meter after one more sample: an exponential average of the rates."""
    last = meter.last
    if last is None or sample.at <= last.at or sample.rx_bytes < last.rx_bytes \
            or sample.tx_bytes < last.tx_bytes:  # a first sample, or counters reset
        return Meter(sample, meter.load)
    dt = sample.at - last.at
    down = (sample.rx_bytes - last.rx_bytes) * 8 / dt / 1e6
    up = (sample.tx_bytes - last.tx_bytes) * 8 / dt / 1e6
    if meter.load is None:
        return Meter(sample, Load(down, up))
    alpha = 1 - math.exp(-dt / tau)
    old = meter.load
    return Meter(sample, Load(old.down_mbps + alpha * (down - old.down_mbps),
                              old.up_mbps + alpha * (up - old.up_mbps)))


def measured_groups(config: Config) -> list[tuple[str, str, list[str]]]:
    """(group ident, method, uplinks in priority order) of every group whose
    method takes its weights from measurements."""
    order = {u.name: (-u.weight, i) for i, u in enumerate(config.uplink)}
    groups = [(DEFAULT_GROUP, config.mode, [u.name for u in config.uplink])]
    groups += [(gid, rule.method, list(rule.uplinks))
               for rule, gid in rule_group_leaders(config)]
    return [(gid, method, sorted(names, key=order.__getitem__))
            for gid, method, names in groups if method in MEASURED]


def choose(config: Config, usable: set[str], loads: Mapping[str, Load],
           latencies: Mapping[str, float], states: Mapping[str, GroupState], now: float
           ) -> tuple[dict[str, Choice], dict[str, GroupState]]:
    """Each measured group's choice from the figures, and the states to pass next time."""
    by_name = {u.name: u for u in config.uplink}
    choices: dict[str, Choice] = {}
    for gid, method, names in measured_groups(config):
        members = [Member(n, by_name[n].weight,
                          Capacity(by_name[n].download, by_name[n].upload),
                          loads.get(n), latencies.get(n)) for n in names if n in usable]
        state = states.get(gid, GroupState())
        if method == "overflow":
            choices[gid] = overflow(members, state, now)
        elif method == "least-used":
            choices[gid] = least_used(members, state)
        else:
            choices[gid] = lowest_latency(members, state, now)
    return choices, {gid: c.state for gid, c in choices.items()}
