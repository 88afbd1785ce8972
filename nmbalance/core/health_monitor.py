"""Health of every uplink together: one state machine each, fed by link facts
and probe rounds, laid over the facts decide() reads. No I/O, no clock of
its own: callers pass `now`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from nmbalance.config.model import Config
from nmbalance.core.decide6 import own_addresses
from nmbalance.core.facts import Facts, UplinkFacts
from nmbalance.core.health_machine import (
    LinkState,
    Observation,
    Phase,
    Policy,
    Tick,
    Tracker,
    Transition,
    deadline,
    loss_percent,
    step,
)


@dataclass(frozen=True)
class HealthChange:
    uplink: str
    transition: Transition
    family: int = 4  # the address family whose probes and link this is about

    @property
    def health_changed(self) -> bool:
        """Whether decide() sees a difference (recovering and down look alike)."""
        t = self.transition
        return t.previous.health != t.phase.health

    def describe(self) -> str:
        what = self.uplink if self.family == 4 else f"{self.uplink} IPv6"
        return f"{what} {self.transition.event}: {self.transition.reason}"


def link_state(static_gateway: bool, facts: UplinkFacts) -> LinkState:
    """Whether the link itself can carry traffic, before any probe says so."""
    if not facts.present:
        return LinkState(False, facts.gateway_reason or "interface not found")
    if not facts.carrier:
        return LinkState(False, "no carrier" if facts.up else f"{facts.interface} is down")
    if not any(not a.ip.is_link_local for a in facts.addresses):
        return LinkState(False, "no address")
    if not (static_gateway or facts.gateway is not None or facts.point_to_point):
        return LinkState(False, facts.gateway_reason or "no gateway")
    return LinkState(True)


def link_state6(static_gateway: bool, facts: UplinkFacts) -> LinkState:
    """The same for IPv6: a global address and an IPv6 next hop."""
    if not facts.present or not facts.carrier:
        return link_state(static_gateway, facts)
    if not own_addresses(facts, 6):
        return LinkState(False, "no global IPv6 address")
    if not (static_gateway or facts.gateway6 is not None or facts.point_to_point):
        return LinkState(False, "no IPv6 default route")
    return LinkState(True)


class HealthMonitor:
    """One family's health: IPv4 (the uplink's health) or IPv6 (its health6)."""

    def __init__(self, config: Config, family: int = 4) -> None:
        self.family = family
        self.policies: dict[str, Policy] = {}
        self.trackers: dict[str, Tracker] = {}
        self._targets: dict[str, tuple[str, ...]] = {}
        self._static: dict[str, bool] = {}
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take a new config; uplinks whose name and probe targets stay keep their history."""
        trackers: dict[str, Tracker] = {}
        targets: dict[str, tuple[str, ...]] = {}
        # IPv6 health is ours to judge only under an ipv6 mode.
        uplinks = config.uplink if self.family == 4 or config.ipv6 != "off" else []
        for u in uplinks:
            targets[u.name] = tuple(str(t) for t in u.probes(self.family))
            same = self._targets.get(u.name) == targets[u.name]
            trackers[u.name] = self.trackers[u.name] if same else Tracker()
        self.trackers, self._targets = trackers, targets
        self.policies = {u.name: Policy.from_config(config.health, bool(targets[u.name]))
                         for u in uplinks}
        self._static = {u.name: (u.gateway if self.family == 4 else u.gateway6) != "auto"
                        for u in uplinks}

    def observe(self, uplink: str, obs: Observation, now: float) -> list[HealthChange]:
        if uplink not in self.trackers:
            return []  # a probe round that outlived a reload
        tracker, moved = step(self.policies[uplink], self.trackers[uplink], obs, now)
        self.trackers[uplink] = tracker
        return [HealthChange(uplink, t, self.family) for t in moved]

    def observe_links(self, facts: Facts, now: float) -> list[HealthChange]:
        state = link_state if self.family == 4 else link_state6
        changes: list[HealthChange] = []
        for name in self.trackers:
            changes += self.observe(name, state(self._static[name], facts.uplink(name)), now)
        return changes

    def tick(self, now: float) -> list[HealthChange]:
        changes: list[HealthChange] = []
        for name in self.trackers:
            changes += self.observe(name, Tick(), now)
        return changes

    def deadline(self) -> float | None:
        times = [d for name, t in self.trackers.items()
                 if (d := deadline(self.policies[name], t)) is not None]
        return min(times) if times else None

    def loss(self, uplink: str) -> float | None:
        """Loss over the window, as the health machine judges it (loss_percent)."""
        if uplink not in self.trackers:
            return None
        return loss_percent(self.policies[uplink], self.trackers[uplink])

    def phase(self, uplink: str) -> Phase:
        return self.trackers[uplink].phase

    def overlay(self, facts: Facts) -> Facts:
        """The facts with each uplink's health and its reason."""
        ups = []
        for f in facts.uplinks:
            t = self.trackers.get(f.name)
            if t is not None and self.family == 4:
                f = replace(f, health=t.phase.health, health_reason=t.reason)
            elif t is not None:
                f = replace(f, health6=t.phase.health, health6_reason=t.reason)
            ups.append(f)
        return replace(facts, uplinks=tuple(ups))
