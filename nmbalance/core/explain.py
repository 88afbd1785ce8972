"""`nmbalance explain`: the path a new connection takes through our table, in
the order the table's chains test it, with the same rule conditions
(core.matching) and the weight maps the kernel holds. Pure: the caller reads
the kernel and passes what it found."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

from nmbalance.config.model import Config
from nmbalance.core.decide import rule_groups
from nmbalance.core.matching import Connection, first_unmet
from nmbalance.core.plan import Plan, UplinkPlan
from nmbalance.core.ruleset import DEFAULT_GROUP, STICKY_KINDS, Group, pick_target, sticky_set
from nmbalance.core.slots import SLOTS
from nmbalance.inet import AnyAddress

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


def _in(addr: AnyAddress | None, prefixes: Iterable[str]) -> str | None:
    if addr is None:
        return None
    return next((p for p in prefixes if addr in ip_network(p)), None)


def explain(config: Config, plan: Plan, c: Connection,
            weights: Mapping[str, WeightMap] | None = None,
            pinned: Callable[[str, str], bool] | None = None,
            states: Mapping[str, tuple[str, str]] | None = None) -> Explanation:
    """`weights`: the kernel's weight maps by name (w_GROUP), when our table is
    applied; `pinned(set, key)`: whether a sticky set holds `key` now; `states`:
    each uplink's (state, reason) as the daemon says, over the plan's (for an IPv6
    connection, its IPv6 state and reason)."""
    contents = plan.nft.contents
    by_ident = {u.ident: u for u in plan.uplinks}
    steps: list[str] = []
    six = c.dst.version == 6
    source, bypass, dns = ((contents.source6, contents.bypass6, contents.dns6) if six else
                           (contents.source4, contents.bypass4, contents.dns4))

    def done(uplink: UplinkPlan, why: str) -> Explanation:
        return Explanation((*steps, why), uplink=uplink.name, balanced=True)

    if six and not plan.nft.spec.ipv6:
        return Explanation(("IPv6 with ipv6 = \"off\": the system's routes decide",),
                           balanced=False)
    if c.iif is not None and c.iif in contents.inbound:
        return done(by_ident[contents.inbound[c.iif]],
                    f"arrives on {c.iif}, the interface of uplink "
                    f"{by_ident[contents.inbound[c.iif]].name}: a connection from outside "
                    "stays on it, replies included")
    if str(c.dst) in contents.uplink_addresses or str(c.dst) in source:
        return Explanation((f"{c.dst} is this machine's own address: delivered here, "
                            "not balanced",), balanced=False)
    if c.iif is None and c.src is not None and str(c.src) in source:
        return done(by_ident[source[str(c.src)]],
                    f"from this machine, bound to {c.src}: the address of that uplink")
    if (prefix := _in(c.dst, bypass)) is not None:
        return Explanation((f"{c.dst} is in {prefix} (a LAN, a [[route]], an uplink's own "
                            "network, link-local or multicast): never balanced",),
                           balanced=False)
    if str(c.dst) in dns:
        return done(by_ident[dns[str(c.dst)]],
                    f"{c.dst} is a DNS server of uplink "
                    f"{by_ident[dns[str(c.dst)]].name}: asked through it")
    if six and (prefix := _in(c.src, contents.prefix6_src)) is not None:
        return done(by_ident[contents.prefix6_src[prefix]],
                    f"from {c.src}, in {prefix}: ipv6 = \"prefix\", the host chose this "
                    "uplink when it chose its source address")

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


def _uplink_state(u: UplinkPlan, family: int) -> tuple[str, str]:
    """An uplink's state and reason in the plan, in the connection's family."""
    status = u.status_in(family)
    return (status.value if status else "absent"), (u.reason if family == 4 else u.reason6)


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
    family = c.dst.version
    six = family == 6
    wmap = f"w6_{group.ident}" if six else f"w_{group.ident}"

    def state(u: UplinkPlan) -> tuple[str, str]:
        return states.get(u.name, _uplink_state(u, family))

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
    if weights is not None and wmap in weights:
        source = "kernel"
        targets = {pick_target(group, u.ident, family): u.name for u in members}
        ranges = [(lo, hi, targets.get(chain)) for lo, hi, chain in weights[wmap]]
    else:
        source = "plan"
        planned = plan.nft.contents.weights6 if six else plan.nft.contents.weights
        ranges = [(lo, hi, by_ident[uid].name) for lo, hi, uid in planned.get(group.ident, ())]
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
            if key is not None and u.name in slots and pinned(
                    sticky_set(group.ident, u.ident, family), key):
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
