"""`nmbalance explain`: the path a new connection takes through our table, in
the order the table's chains test it, with the same rule conditions
(core.matching) and the weight maps the kernel holds. Pure: the caller reads
the kernel and passes what it found."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from nmbalance.config.model import Config
from nmbalance.core.decide import rule_groups
from nmbalance.core.matching import Connection, first_unmet
from nmbalance.core.plan import Plan, UplinkPlan
from nmbalance.core.ruleset import DEFAULT_GROUP, STICKY_KINDS, Group, pick_target, sticky_set
from nmbalance.core.slots import SLOTS

# (first slot, last slot, the chain those slots go to): a weight map as nft lists it.
WeightMap = Sequence[tuple[int, int, str]]


@dataclass(frozen=True)
class Explanation:
    steps: tuple[str, ...]  # how the table decided, in its order
    rule: str | None = None  # the [[rule]] that matched; None: the global mode
    method: str | None = None
    uplink: str | None = None  # where it goes, when that is certain
    distribution: Mapping[str, float] = field(default_factory=dict)  # else: the odds
    balanced: bool = True  # False: routed by the system's tables, not by us
    excluded: Mapping[str, str] = field(default_factory=dict)  # uplink -> why not
    weights_from: str = ""  # "kernel" (what is applied) or "plan"

    def as_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "rule": self.rule, "method": self.method,
                "uplink": self.uplink, "distribution": dict(self.distribution),
                "balanced": self.balanced, "excluded": dict(self.excluded),
                "weights_from": self.weights_from or None}

    def describe(self) -> str:
        lines = [f"  {step}" for step in self.steps]
        if self.uplink:
            lines.append(f"=> {self.uplink}")
        elif self.distribution:
            odds = ", ".join(f"{name} {p:.1%}" for name, p in self.distribution.items())
            lines.append(f"=> one of: {odds} (a random choice per new connection)")
        elif not self.balanced:
            lines.append("=> not balanced: the system's routing tables decide")
        else:
            lines.append("=> nowhere: no uplink can take it")
        lines += [f"   not {name}: {why}" for name, why in self.excluded.items()]
        return "\n".join(lines) + "\n"


def _in(addr: IPv4Address | None, prefixes: Sequence[str]) -> str | None:
    if addr is None:
        return None
    return next((p for p in prefixes if addr in IPv4Network(p)), None)


def explain(config: Config, plan: Plan, c: Connection,
            weights: Mapping[str, WeightMap] | None = None,
            pinned: Callable[[str, str], bool] | None = None,
            states: Mapping[str, tuple[str, str]] | None = None) -> Explanation:
    """`weights`: the kernel's weight maps by name (w_GROUP), when our table is
    applied; `pinned(set, key)`: whether a sticky set holds `key` now; `states`:
    each uplink's (state, reason) as the daemon says, over the plan's."""
    contents = plan.nft.contents
    by_ident = {u.ident: u for u in plan.uplinks}
    steps: list[str] = []

    def done(uplink: UplinkPlan, why: str) -> Explanation:
        return Explanation((*steps, why), uplink=uplink.name, balanced=True)

    if c.iif is not None and c.iif in contents.inbound:
        return done(by_ident[contents.inbound[c.iif]],
                    f"arrives on {c.iif}, the interface of uplink "
                    f"{by_ident[contents.inbound[c.iif]].name}: a connection from outside "
                    "stays on it, replies included")
    if str(c.dst) in contents.uplink_addresses or str(c.dst) in contents.source4:
        return Explanation((f"{c.dst} is this machine's own address: delivered here, "
                            "not balanced",), balanced=False)
    if c.iif is None and c.src is not None and str(c.src) in contents.source4:
        return done(by_ident[contents.source4[str(c.src)]],
                    f"from this machine, bound to {c.src}: the address of that uplink")
    if (prefix := _in(c.dst, contents.bypass4)) is not None:
        return Explanation((f"{c.dst} is in {prefix} (a LAN, a [[route]] or an uplink's own "
                            "network): never balanced",), balanced=False)
    if str(c.dst) in contents.dns4:
        return done(by_ident[contents.dns4[str(c.dst)]],
                    f"{c.dst} is a DNS server of uplink "
                    f"{by_ident[contents.dns4[str(c.dst)]].name}: asked through it")

    chosen = None
    for rule, gid in rule_groups(config):
        unmet = first_unmet(rule, c)
        if unmet is None:
            steps.append(f"rule {rule.name} matches (first match wins)")
            chosen = (rule, gid)
            break
        steps.append(f"rule {rule.name}: no ({unmet.describe()} is not met)")
    groups = {g.ident: g for g in plan.nft.spec.groups}
    if chosen is None:
        steps.append(f"no rule matches: the global mode, {config.mode}")
        return _group(config, plan, groups[DEFAULT_GROUP], config.mode, None, c, steps,
                      weights, pinned, states)
    rule, gid = chosen
    return _group(config, plan, groups[gid], rule.method, rule.name, c, steps, weights,
                  pinned, states)


def _sticky_key(group: Group, c: Connection) -> str | None:
    by = "destination" if group.kind == "fastest" else group.persistence_by
    if by == "source":
        return str(c.src) if c.src else None
    if by == "destination":
        return str(c.dst)
    return f"{c.src} . {c.dst}" if c.src else None


def _group(config: Config, plan: Plan, group: Group, method: str, rule: str | None,
           c: Connection, steps: list[str], weights: Mapping[str, WeightMap] | None,
           pinned: Callable[[str, str], bool] | None,
           states: Mapping[str, tuple[str, str]] | None) -> Explanation:
    by_ident = {u.ident: u for u in plan.uplinks}
    members = [by_ident[i] for i in group.uplinks]
    states = states or {}

    def state(u: UplinkPlan) -> tuple[str, str]:
        return states.get(u.name, (u.status.value, u.reason))

    if group.kind == "enforced":
        target = members[0]
        if state(target)[0] in ("active", "standby", "degraded"):
            return Explanation((*steps, f"enforced: always {target.name}"), rule, method,
                               uplink=target.name)
        return Explanation((*steps, f"enforced to {target.name}, which is "
                            f"{state(target)[0]}: unreachable, never another uplink"), rule,
                           method, excluded={target.name: _why(state(target))})
    # The slot ranges of the group's weight map, each with the uplink it goes to:
    # the kernel's (by the chain it sends to) when applied, else the plan's.
    if weights is not None and f"w_{group.ident}" in weights:
        source = "kernel"
        targets = {pick_target(group, u.ident): u.name for u in members}
        ranges = [(lo, hi, targets.get(chain)) for lo, hi, chain in weights[f"w_{group.ident}"]]
    else:
        source = "plan"
        ranges = [(lo, hi, by_ident[uid].name)
                  for lo, hi, uid in plan.nft.contents.weights.get(group.ident, ())]
    slots: dict[str, int] = {}
    for lo, hi, name in ranges:
        if name is not None:
            slots[name] = slots.get(name, 0) + hi - lo + 1
    if not slots and group.fallback:
        steps.append(f"no uplink of rule {rule} can take it now: the global mode decides")
        default = next(g for g in plan.nft.spec.groups if g.ident == DEFAULT_GROUP)
        return _group(config, plan, default, config.mode, None, c, steps, weights, pinned,
                      states)
    excluded = {u.name: _why(state(u)) for u in members if u.name not in slots}
    if group.kind in STICKY_KINDS and pinned is not None:
        key = _sticky_key(group, c)
        for u in members:
            if key is not None and u.name in slots and pinned(sticky_set(group.ident, u.ident),
                                                               key):
                what = "learned as fastest" if group.kind == "fastest" else "seen recently"
                return Explanation((*steps, f"{method}: {key} is {what} on {u.name}"), rule,
                                   method, uplink=u.name, excluded=excluded,
                                   weights_from=source)
        if key is not None:
            steps.append(f"{method}: {key} is not pinned to an uplink yet")
    total = sum(slots.values())
    distribution = {name: n / SLOTS for name, n in sorted(slots.items(), key=lambda i: -i[1])}
    if total == SLOTS and len(slots) == 1:
        only = next(iter(slots))
        return Explanation((*steps, f"{method}: {only} takes every new connection now"), rule,
                           method, uplink=only, excluded=excluded, weights_from=source)
    steps.append(f"{method}: the weights split new connections")
    return Explanation(tuple(steps), rule, method, distribution=distribution,
                       excluded=excluded, weights_from=source)


def _why(state: tuple[str, str]) -> str:
    status, reason = state
    if status in ("active", "degraded"):
        return "in rotation, but this method does not choose it now" + (
            f" ({reason})" if reason else "")
    return status + (f": {reason}" if reason else "")
