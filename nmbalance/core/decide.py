"""decide(config, facts) -> Plan. Pure: the same inputs give the same Plan."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, collapse_addresses

from nmbalance.config.model import Config, Rule
from nmbalance.core.facts import AnyNetwork, Facts, GatewaySource, Health, UplinkFacts
from nmbalance.core.plan import NftPlan, Plan, Route, RoutingRule, UplinkPlan, UplinkStatus
from nmbalance.core.ruleset import (
    DIGEST_CHAIN_PREFIX,
    Group,
    MarkedUplink,
    PortForwardSpec,
    TableContents,
    TableSpec,
    render_contents,
    render_structure,
    sticky_sets,
)
from nmbalance.core.slots import SLOTS, allocate

MAIN_TABLE = 254
DEFAULT_GROUP = "default"
# Methods that choose by weights the daemon computes from measurements; until
# it has them (a one-shot apply never does) they use the configured weights.
ADAPTIVE = ("overflow", "least-used", "lowest-latency", "fastest-response")


@dataclass(frozen=True)
class Layout:
    """Where uplink i lives in the kernel: its mark, table and rule priorities."""

    mask: int
    table_base: int
    priority_base: int

    @property
    def shift(self) -> int:
        return (self.mask & -self.mask).bit_length() - 1

    def mark(self, index: int) -> int:
        return (index + 1) << self.shift

    def table(self, index: int) -> int:
        return self.table_base + index + 1

    @property
    def suppress_priority(self) -> int:
        return self.priority_base

    def fwmark_priority(self, index: int) -> int:
        return self.priority_base + 1 + index

    def source_priority(self, index: int) -> int:
        return self.priority_base + 256 + index


def layout_of(config: Config) -> Layout:
    k = config.kernel
    return Layout(k.mark_mask, k.route_table_base, k.rule_priority_base)


def idents(names: Sequence[str]) -> dict[str, str]:
    """nft-safe, unique identifiers for uplink names."""
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if ident in out.values() or not ident[0].isalpha():
            ident = f"u{i}_{ident}"
        out[name] = ident
    return out


def _status(
    facts: UplinkFacts, routed: bool, selected: frozenset[str] | None
) -> tuple[UplinkStatus, str]:
    if not facts.present:
        return UplinkStatus.ABSENT, facts.gateway_reason or "interface not found"
    if not facts.carrier:
        return UplinkStatus.DOWN, "no carrier"
    if not routed:
        return UplinkStatus.NO_GATEWAY, facts.gateway_reason or "no gateway found"
    if facts.health == Health.DOWN:
        return UplinkStatus.DOWN, facts.health_reason or "probes failing"
    if selected is not None and facts.name not in selected:
        return UplinkStatus.LEFT_OUT, "not selected"
    return UplinkStatus.ACTIVE, ""


def _gateway(config_gateway: object, facts: UplinkFacts) -> tuple[str | None, str]:
    if isinstance(config_gateway, IPv4Address):
        return str(config_gateway), GatewaySource.STATIC.value
    if facts.gateway is not None:
        return str(facts.gateway), facts.gateway_source.value
    if facts.point_to_point:
        return None, GatewaySource.DEVICE.value
    return None, GatewaySource.NONE.value


def _fail_open(
    per: dict[str, tuple[UplinkFacts, str | None, str, bool, UplinkStatus, str]],
    selected: frozenset[str] | None,
) -> set[str]:
    """Uplinks that only the probes call down: when all are, the probe targets
    may be what failed, and cutting the whole site off helps nobody."""
    return {
        name for name, (f, _, _, routed, status, _) in per.items()
        if status is UplinkStatus.DOWN and f.carrier and routed and f.health is Health.DOWN
        and (selected is None or name in selected)
    }


def _group_kind(method: str) -> str:
    if method in ("persistence", "enforced"):
        return method
    return "weights"


def _group_weights(
    method: str, members: Sequence[str], weights: dict[str, int], usable: set[str]
) -> list[tuple[str, int]]:
    live = [(name, weights[name]) for name in members if name in usable]
    if method == "priority":
        if not live:
            return []
        top = max(live, key=lambda item: item[1])  # first of the highest wins ties
        return [(top[0], 1)]
    return live


def _ports(spans: Sequence[tuple[int, int]]) -> str:
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans)


def rule_matches(rule: Rule) -> list[str]:
    """nft match expressions for a [[rule]]: one per address family it covers."""
    common: list[str] = []
    if rule.iif:
        common.append("iifname { " + ", ".join(f'"{i}"' for i in rule.iif) + " }")
    if rule.proto in ("tcp", "udp", "sctp"):
        common.append(f"meta l4proto {rule.proto}")
        if rule.sport:
            common.append(f"th sport {{ {_ports(rule.sport)} }}")
        if rule.dport:
            common.append(f"th dport {{ {_ports(rule.dport)} }}")
    elif rule.proto is not None:
        common.append("meta l4proto " + ("icmp" if rule.proto == "icmp" else "ipv6-icmp"))
    if not rule.src and not rule.dst:
        return [" ".join(common)]
    out = []
    for version, key in ((4, "ip"), (6, "ip6")):
        src = [str(n) for n in rule.src if n.version == version]
        dst = [str(n) for n in rule.dst if n.version == version]
        if (rule.src and not src) or (rule.dst and not dst):
            continue
        parts = []
        if src:
            parts.append(f"{key} saddr {{ {', '.join(src)} }}")
        if dst:
            parts.append(f"{key} daddr {{ {', '.join(dst)} }}")
        out.append(" ".join(parts + common))
    return out


def _collapse(networks: Iterable[AnyNetwork], version: int) -> tuple[str, ...]:
    nets = [n for n in networks if n.version == version and n.prefixlen > 0]
    if version == 4:
        v4 = [n for n in nets if isinstance(n, IPv4Network)]
        return tuple(str(n) for n in collapse_addresses(v4))
    v6 = [n for n in nets if isinstance(n, IPv6Network)]
    return tuple(str(n) for n in collapse_addresses(v6))


def decide(
    config: Config,
    facts: Facts,
    selected: frozenset[str] | None = None,
    snippets: tuple[tuple[str, str], ...] = (),
) -> Plan:
    layout = layout_of(config)
    names = [u.name for u in config.uplink]
    ident = idents(names)
    weights = {u.name: u.weight for u in config.uplink}
    warnings: list[str] = []

    # 1. Each uplink alone: where it is, how it is reached, whether it may be used.
    per: dict[str, tuple[UplinkFacts, str | None, str, bool, UplinkStatus, str]] = {}
    for u in config.uplink:
        f = facts.uplink(u.name)
        gateway, source = _gateway(u.gateway, f)
        routed = f.present and (gateway is not None or f.point_to_point)
        status, reason = _status(f, routed, selected)
        per[u.name] = (f, gateway, source, routed, status, reason)
    usable = {name for name, p in per.items() if p[4].usable}
    if not usable and config.health.fail_open:
        usable = _fail_open(per, selected)
        if usable:
            warnings.append("every uplink looks down; failing open over those with carrier: "
                            + ", ".join(n for n in names if n in usable))
            for name in usable:
                per[name] = (*per[name][:4], UplinkStatus.ACTIVE,
                             "fail-open: " + (per[name][5] or "probes failing"))

    # 2. The groups: the global mode, then each [[rule]] in order.
    groups: list[Group] = [
        Group(DEFAULT_GROUP, _group_kind(config.mode), tuple(ident[n] for n in names),
              config.persistence_by, config.persistence_timeout)
    ]
    methods = {DEFAULT_GROUP: config.mode}
    members = {DEFAULT_GROUP: names}
    matches: list[tuple[str, str]] = []
    for i, rule in enumerate(config.rule):
        gid = f"r{i}_{re.sub(r'[^A-Za-z0-9_]', '_', rule.name)}"
        groups.append(Group(
            gid, _group_kind(rule.method), tuple(ident[n] for n in rule.uplinks),
            rule.persistence_by or config.persistence_by,
            rule.persistence_timeout or config.persistence_timeout,
            fallback=True,
        ))
        methods[gid] = rule.method
        members[gid] = list(rule.uplinks)
        matches += [(m, gid) for m in rule_matches(rule)]
    for method in sorted(set(methods.values()) & set(ADAPTIVE)):
        warnings.append(f"method {method!r} needs the daemon's measurements; using weights")

    # 3. Weights -> slot ranges per group.
    slot_map: dict[str, list[tuple[int, int, str]]] = {}
    share: dict[str, float] = dict.fromkeys(names, 0.0)
    taking: set[str] = set()
    for g in groups:
        if g.kind == "enforced":
            continue
        ranges = allocate(_group_weights(methods[g.ident], members[g.ident], weights, usable))
        slot_map[g.ident] = [(r.first, r.last, ident[r.name]) for r in ranges]
        taking |= {r.name for r in ranges}
        if g.ident == DEFAULT_GROUP:
            share.update({r.name: r.size / SLOTS for r in ranges})
    enforced_targets = {members[g.ident][0] for g in groups if g.kind == "enforced"}
    taking |= enforced_targets & usable

    # 4. Kernel routing: a table per routed uplink (enforced ones get one even
    # when unreachable, so their traffic never leaks to another uplink).
    uplinks: list[UplinkPlan] = []
    routes: list[Route] = []
    rules: list[RoutingRule] = [
        RoutingRule(layout.suppress_priority, MAIN_TABLE, suppress_prefixlength=0)
    ]
    for i, u in enumerate(config.uplink):
        f, gateway, source, routed, status, reason = per[u.name]
        if status.usable and u.name not in taking:
            status, reason = UplinkStatus.STANDBY, "a preferred uplink is up"
        table = layout.table(i)
        iface = f.interface or u.interface
        if routed:
            routes.append(Route(table, "0.0.0.0/0", gateway=gateway, interface=iface))
        elif u.name in enforced_targets:
            routes.append(Route(table, "0.0.0.0/0", kind="unreachable"))
        if routed or u.name in enforced_targets:
            rules.append(RoutingRule(layout.fwmark_priority(i), table,
                                     fwmark=layout.mark(i), fwmask=layout.mask))
        if routed:
            for addr in f.addresses:
                if addr.version == 4:
                    rules.append(RoutingRule(layout.source_priority(i), table,
                                             src=f"{addr.ip}/32"))
        uplinks.append(UplinkPlan(
            name=u.name, ident=ident[u.name], mark=layout.mark(i), table=table,
            interface=iface, gateway=gateway, gateway_source=source, status=status,
            reason=reason, weight=u.weight, share=share[u.name], routed=routed,
        ))

    # 5. The nft table.
    lan_ifaces = tuple(lan.interface for lan in config.lan)
    spec = TableSpec(
        name=config.kernel.table,
        mask=layout.mask,
        uplinks=tuple(MarkedUplink(ident[n], layout.mark(i)) for i, n in enumerate(names)),
        groups=tuple(groups),
        matches=tuple(matches),
        lan_interfaces=lan_ifaces,
        restrictive=config.firewall.restrictive,
        allow_ssh=config.firewall.allow_ssh,
        ssh_port=config.firewall.ssh_port,
        port_forwards=tuple(
            PortForwardSpec(i, pf.proto, pf.port[0], pf.port[1], str(pf.to), pf.to_port)
            for i, pf in enumerate(config.port_forward)
        ),
        snippets=snippets,
    )
    contents = _contents(config, facts, per, ident, usable, slot_map, spec)
    structure = render_structure(spec)
    digest = hashlib.sha256(structure.encode()).hexdigest()[:16]
    structure = structure.replace(
        f"table inet {spec.name} {{\n",
        f'table inet {spec.name} {{\n  comment "nmbalance {digest}"\n'
        f"  chain {DIGEST_CHAIN_PREFIX}{digest} {{}}\n", 1,
    )
    nft = NftPlan(
        table=spec.name,
        digest=digest,
        structure=structure,
        contents=render_contents(spec, contents),
        sticky_sets=sticky_sets(spec),
    )
    return Plan(
        uplinks=tuple(uplinks),
        nft=nft,
        routes=tuple(sorted(routes)),
        rules=tuple(sorted(rules)),
        mark_mask=layout.mask,
        route_protocol=config.kernel.route_protocol,
        live_marks=frozenset(layout.mark(i) for i, n in enumerate(names) if n in usable),
        warnings=tuple(warnings),
    )


def _contents(
    config: Config,
    facts: Facts,
    per: dict[str, tuple[UplinkFacts, str | None, str, bool, UplinkStatus, str]],
    ident: dict[str, str],
    usable: set[str],
    slot_map: dict[str, list[tuple[int, int, str]]],
    spec: TableSpec,
) -> TableContents:
    layout = layout_of(config)
    present = {u.name: per[u.name][0].interface or u.interface
               for u in config.uplink if per[u.name][0].present}
    bypass: list[AnyNetwork] = list(facts.bypass)
    for lan in facts.lans:
        bypass += lan.prefixes
    for f, *_ in per.values():
        bypass += [a.network for a in f.addresses]
    dns4: dict[str, str] = {}
    dns6: dict[str, str] = {}
    for u in config.uplink:
        f, _, _, routed, *_ = per[u.name]
        if routed:
            for addr in f.dns or tuple(u.dns):
                (dns4 if addr.version == 4 else dns6).setdefault(str(addr), ident[u.name])
    lan_ifaces = [lan.interface for lan in config.lan]
    uplink_if = {n: i for n, i in present.items() if i}
    if config.forwarding_group:
        by_name = dict(uplink_if) | {lan.name: lan.interface for lan in config.lan}
        pairs = sorted({
            (by_name[a], by_name[b])
            for g in config.forwarding_group for a in g.members for b in g.members
            if a != b and a in by_name and b in by_name
        })
    else:
        pairs = sorted({(lan, up) for lan in lan_ifaces for up in uplink_if.values()})
    pf_ifaces = {
        i: tuple(uplink_if[n] for n in (pf.uplinks or [u.name for u in config.uplink])
                 if n in uplink_if)
        for i, pf in enumerate(config.port_forward)
    }
    dead = tuple(sorted(
        name for name, owner in sticky_sets(spec).items()
        if owner not in {ident[n] for n in usable}
    ))
    return TableContents(
        live=tuple(layout.mark(i) for i, u in enumerate(config.uplink) if u.name in usable),
        weights=slot_map,
        bypass4=_collapse(bypass, 4),
        bypass6=_collapse(bypass, 6),
        dns4=dns4,
        dns6=dns6,
        inbound={i: ident[n] for n, i in uplink_if.items()},
        masquerade=tuple(uplink_if[u.name] for u in config.uplink
                         if u.masquerade and u.name in uplink_if),
        forward_pairs=tuple(pairs),
        port_forward_ifaces=pf_ifaces,
        dead_sticky_sets=dead,
    )
