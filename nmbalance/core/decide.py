"""decide(config, facts) -> Plan. Pure: the same inputs give the same Plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, collapse_addresses

from nmbalance.config.model import Config, Rule
from nmbalance.core.facts import Facts, GatewaySource, Health, UplinkFacts
from nmbalance.core.matching import rule_matches
from nmbalance.core.numbering import Layout, assign, layout_of
from nmbalance.core.plan import (
    MAIN_TABLE,
    NftPlan,
    Plan,
    Route,
    RoutingRule,
    UplinkPlan,
    UplinkStatus,
)
from nmbalance.core.ruleset import (
    DEFAULT_GROUP,
    Group,
    MarkedUplink,
    PortForwardSpec,
    TableContents,
    TableSpec,
    ident,
    render_contents,
    render_snippets,
    render_structure,
    rule_group,
    sticky_sets,
)
from nmbalance.core.slots import SLOTS, allocate
from nmbalance.inet import AnyNetwork

# Methods that choose by weights the daemon computes from measurements; until
# it has them (a one-shot apply never does) they use the configured weights.
ADAPTIVE = ("overflow", "least-used", "lowest-latency", "fastest-response")


@dataclass(frozen=True)
class Decision:
    """One uplink on its own: how it is reached and whether it may take traffic."""

    facts: UplinkFacts
    gateway: str | None
    gateway_source: str
    routed: bool  # gets a routing table of its own
    status: UplinkStatus
    reason: str

    @property
    def interface(self) -> str | None:
        return self.facts.interface


def _status(f: UplinkFacts, routed: bool, selected: frozenset[str] | None,
            refused: str | None) -> tuple[UplinkStatus, str]:
    if not f.present:
        return UplinkStatus.ABSENT, f.gateway_reason or "interface not found"
    if not f.carrier:
        return UplinkStatus.DOWN, "no carrier" if f.up else f"{f.interface} is down"
    if not routed:
        return UplinkStatus.NO_GATEWAY, f.gateway_reason or "no gateway found"
    if refused is not None:
        return UplinkStatus.ERROR, refused
    if f.health == Health.DOWN:
        return UplinkStatus.DOWN, f.health_reason or "probes failing"
    if selected is not None and f.name not in selected:
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


def _decide_one(config_gateway: object, f: UplinkFacts, selected: frozenset[str] | None,
                refused: str | None) -> Decision:
    gateway, source = _gateway(config_gateway, f)
    # The kernel takes no route through an interface that is administratively down.
    routed = f.present and f.up and refused is None and (gateway is not None or f.point_to_point)
    status, reason = _status(f, routed or refused is not None, selected, refused)
    return Decision(f, gateway, source, routed, status, reason)


def _fail_open(per: Mapping[str, Decision], selected: frozenset[str] | None) -> set[str]:
    """Uplinks that only the probes call down: when all are, the probe targets
    may be what failed, and cutting the whole site off helps nobody."""
    return {
        name for name, d in per.items()
        if d.status is UplinkStatus.DOWN and d.facts.carrier and d.routed
        and d.facts.health is Health.DOWN and (selected is None or name in selected)
    }


def _group_kind(method: str) -> str:
    if method in ("persistence", "enforced"):
        return method
    return "fastest" if method == "fastest-response" else "weights"


def _group_weights(method: str, members: Sequence[str], weights: Mapping[str, float],
                   degraded: set[str], usable: set[str]) -> list[tuple[str, float]]:
    live = [(name, weights[name]) for name in members if name in usable]
    if method == "priority":
        if not live:
            return []
        # Healthy before degraded, then the highest weight; the first wins ties.
        top = max(live, key=lambda item: (item[0] not in degraded, item[1]))
        return [(top[0], 1)]
    # Weight 0 marks a backup: in rotation only while no uplink of positive weight is,
    # and then the backups share alike.
    weighted = [(name, w) for name, w in live if w > 0]
    return weighted or [(name, 1.0) for name, _ in live]


def _collapse4(networks: Iterable[AnyNetwork]) -> tuple[str, ...]:
    v4 = [n for n in networks if isinstance(n, IPv4Network) and n.prefixlen > 0]
    return tuple(str(n) for n in collapse_addresses(v4))


def rule_groups(config: Config) -> list[tuple[Rule, str]]:
    """Each [[rule]] with its group identifier, unique even for repeated names."""
    seen: dict[str, int] = {}
    out = []
    for rule in config.rule:
        gid = rule_group(rule.name)
        seen[gid] = seen.get(gid, 0) + 1
        out.append((rule, gid if seen[gid] == 1 else f"{gid}__{seen[gid]}"))
    return out


def racing_groups(config: Config) -> list[str]:
    """The groups whose method is fastest-response with its races on."""
    out = [DEFAULT_GROUP] if config.mode == "fastest-response" and config.race else []
    return out + [gid for rule, gid in rule_groups(config)
                  if rule.method == "fastest-response" and rule.race]


def decide(
    config: Config,
    facts: Facts,
    selected: frozenset[str] | None = None,
    snippets: tuple[tuple[str, str], ...] = (),
    ids: Mapping[str, int] | None = None,
    refused: Mapping[str, str] | None = None,
    measured: Mapping[str, Mapping[str, float]] | None = None,
) -> Plan:
    """`ids`: the uplinks' previous ids (core.numbering), kept where they still
    apply; `refused`: uplinks whose routes the kernel refused, with its reason;
    `measured`: weights the daemon worked out from measurements (core.adaptive),
    by group, for groups whose method needs them."""
    measured = measured or {}
    layout = layout_of(config)
    names = [u.name for u in config.uplink]
    uid = assign(names, ids or {}, layout.capacity)
    idents = {n: ident(n) for n in names}
    refused = refused or {}
    warnings: list[str] = []

    # 1. Each uplink alone: where it is, how it is reached, whether it may be used.
    per = {u.name: _decide_one(u.gateway, facts.uplink(u.name), selected, refused.get(u.name))
           for u in config.uplink}
    usable = {name for name, d in per.items() if d.status.usable}
    if not usable and config.health.fail_open:
        usable = _fail_open(per, selected)
        if usable:
            warnings.append("every uplink looks down; failing open over those with carrier: "
                            + ", ".join(n for n in names if n in usable))
            for name in usable:
                per[name] = replace(per[name], status=UplinkStatus.ACTIVE,
                                    reason="fail-open: " + (per[name].reason or "probes failing"))
    degraded = {name for name in usable if per[name].facts.health is Health.DEGRADED}
    scale = config.health.degraded_weight_percent / 100
    weights = {u.name: u.weight * (scale if u.name in degraded else 1.0) for u in config.uplink}

    # 2. The groups: the global mode, then each [[rule]] in order.
    groups: list[Group] = [
        Group(DEFAULT_GROUP, _group_kind(config.mode), tuple(idents[n] for n in names),
              config.persistence_by, config.persistence_timeout, race=config.race)
    ]
    methods = {DEFAULT_GROUP: config.mode}
    members = {DEFAULT_GROUP: names}
    matches: list[tuple[str, str]] = []
    for rule, gid in rule_groups(config):
        groups.append(Group(
            gid, _group_kind(rule.method), tuple(idents[n] for n in rule.uplinks),
            rule.persistence_by or config.persistence_by,
            rule.persistence_timeout or config.persistence_timeout,
            fallback=True, race=rule.race,
        ))
        methods[gid] = rule.method
        members[gid] = list(rule.uplinks)
        matches += [(m, gid) for m in rule_matches(rule)]
    for method in sorted({m for g, m in methods.items() if g not in measured} & set(ADAPTIVE)):
        warnings.append(f"method {method!r} needs the daemon's measurements; using weights")

    # 3. Weights -> slot ranges per group.
    slot_map: dict[str, list[tuple[int, int, str]]] = {}
    share: dict[str, float] = dict.fromkeys(names, 0.0)
    taking: set[str] = set()
    for g in groups:
        if g.kind == "enforced":
            continue
        # Measured weights stand while their uplinks can take traffic; the moment none
        # can (between a failure and the daemon's next figures), the configured ones.
        ranges = allocate([(n, w) for n, w in measured.get(g.ident, {}).items()
                           if n in usable and n in members[g.ident]])
        if not ranges:
            ranges = allocate(_group_weights(methods[g.ident], members[g.ident], weights,
                                             degraded, usable))
        slot_map[g.ident] = [(r.first, r.last, idents[r.name]) for r in ranges]
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
    # [[route]]s, on the devices there are (one that is gone would be refused).
    routes += [Route(MAIN_TABLE, str(r.to), gateway=str(r.via) if r.via else None,
                     interface=r.interface) for r in config.route if r.interface in facts.links]
    for u in config.uplink:
        d, i = per[u.name], uid[u.name]
        status, reason = d.status, d.reason
        if status.usable and u.name not in taking:
            status, reason = UplinkStatus.STANDBY, "a preferred uplink is up"
        if status is UplinkStatus.ACTIVE and u.name in degraded:
            reason = (f"degraded ({d.facts.health_reason}): "
                      f"{config.health.degraded_weight_percent}% of its weight")
        table = layout.table(i)
        iface = d.interface or u.interface
        if d.routed:
            routes.append(Route(table, "0.0.0.0/0", gateway=d.gateway, interface=iface))
        elif u.name in enforced_targets:
            routes.append(Route(table, "0.0.0.0/0", kind="unreachable"))
        if d.routed or u.name in enforced_targets:
            rules.append(RoutingRule(layout.fwmark_priority(i), table,
                                     fwmark=layout.mark(i), fwmask=layout.mask))
        if d.routed:
            for addr in d.facts.addresses:
                if addr.version == 4:
                    rules.append(RoutingRule(layout.source_priority(i), table,
                                             src=f"{addr.ip}/32"))
        uplinks.append(UplinkPlan(
            name=u.name, ident=idents[u.name], id=i, mark=layout.mark(i), table=table,
            interface=iface, gateway=d.gateway, gateway_source=d.gateway_source, status=status,
            reason=reason, weight=u.weight, share=share[u.name], routed=d.routed,
        ))

    # 5. The nft table.
    spec = TableSpec(
        name=config.kernel.table,
        mask=layout.mask,
        uplinks=tuple(sorted((MarkedUplink(idents[n], layout.mark(uid[n])) for n in names),
                             key=lambda m: m.mark)),
        groups=tuple(groups),
        matches=tuple(matches),
        restrictive=config.firewall.restrictive,
        allow_ssh=config.firewall.allow_ssh,
        ssh_port=config.firewall.ssh_port,
        clamp_mss=_clamps_mss(config),
        port_forwards=tuple(
            PortForwardSpec(i, pf.proto, pf.port[0], pf.port[1], str(pf.to), pf.to_port,
                            pf.hairpin)
            for i, pf in enumerate(config.port_forward)
        ),
        snippets=snippets,
        learn_group=config.kernel.learn_log_group,
    )
    contents = _contents(config, facts, per, idents, usable, slot_map, spec, layout, uid)
    digest, structure = render_structure(spec)
    return Plan(
        uplinks=tuple(uplinks),
        nft=NftPlan(table=spec.name, digest=digest, structure=structure,
                    contents_text=render_contents(spec, contents), spec=spec, contents=contents,
                    snippets_text=render_snippets(spec)),
        routes=tuple(sorted(routes)),
        rules=tuple(sorted(rules)),
        mark_mask=layout.mask,
        route_protocol=config.kernel.route_protocol,
        live_marks=frozenset(layout.mark(uid[n]) for n in names if n in usable),
        warnings=tuple(warnings),
        forwarding=config.kernel.ip_forward is True or (
            config.kernel.ip_forward == "auto" and bool(config.lan)),
    )


# Devices whose MTU is below Ethernet's by nature: PPP(oE) and tunnels.
MSS_CLAMP_DEVICES = ("ppp", "tun")


def _clamps_mss(config: Config) -> bool:
    """Whether the clamp chain is needed: asked for, or "auto" with an uplink that may
    be a ppp or tun device (one named by connection may be anything)."""
    clamp = config.firewall.clamp_mss
    return clamp is True or (clamp == "auto" and any(
        u.interface is None or u.interface.startswith(MSS_CLAMP_DEVICES) for u in config.uplink))


def allowed_pairs(config: Config) -> set[frozenset[str]]:
    """Which services may reach each other (Net-ISP-Balance's forwarding groups): each
    group allows every pair of its members, ":isp" and ":lan" standing for all of
    them; no group at all means [":isp", ":lan"], everyone. A group of one allows
    nothing."""
    isps = [u.name for u in config.uplink]
    lans = [lan.name for lan in config.lan]
    groups = [g.members for g in config.forwarding_group] or [[":isp", ":lan"]]
    pairs: set[frozenset[str]] = set()
    for members in groups:
        names = [n for m in members for n in (isps if m == ":isp" else lans if m == ":lan"
                                               else [m])]
        pairs |= {frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1:]
                  if a != b}
    return pairs


def _contents(
    config: Config,
    facts: Facts,
    per: Mapping[str, Decision],
    idents: Mapping[str, str],
    usable: set[str],
    slot_map: dict[str, list[tuple[int, int, str]]],
    spec: TableSpec,
    layout: Layout,
    uid: Mapping[str, int],
) -> TableContents:
    present = {u.name: per[u.name].interface or u.interface
               for u in config.uplink if per[u.name].facts.present}
    bypass: list[AnyNetwork] = [*facts.bypass, *(r.to for r in config.route)]
    for lan in facts.lans:
        bypass += lan.prefixes
    for d in per.values():
        bypass += [a.network for a in d.facts.addresses]
    dns4: dict[str, str] = {}
    for u in config.uplink:
        # Only uplinks that take traffic: a dead one's DNS server would be unreachable.
        if per[u.name].routed and u.name in usable:
            for addr in per[u.name].facts.dns or tuple(u.dns):
                if isinstance(addr, IPv4Address):
                    dns4.setdefault(str(addr), idents[u.name])
    # Addresses of routed uplinks, but not of the one holding the main table's default
    # route: the kernel gives every unbound socket that one's address.
    source4 = {str(a.ip): idents[u.name] for u in config.uplink
               if per[u.name].routed and per[u.name].interface != facts.main_default
               for a in per[u.name].facts.addresses if isinstance(a.ip, IPv4Address)}
    uplink_if = {n: i for n, i in present.items() if i}
    lan_nets = {lan.name: (lan.device, [str(p) for f in facts.lans if f.name == lan.name
                                         for p in f.prefixes if isinstance(p, IPv4Network)])
                for lan in config.lan}
    allowed = allowed_pairs(config)
    forward: set[tuple[str, str, str, str]] = set()
    for a, (dev_a, nets_a) in lan_nets.items():
        for b, (dev_b, nets_b) in lan_nets.items():
            if a != b and frozenset((a, b)) in allowed:
                forward |= {(dev_a, p, dev_b, q) for p in nets_a for q in nets_b}
        for up, dev in uplink_if.items():
            if frozenset((a, up)) in allowed:
                forward |= {(dev_a, p, dev, "0.0.0.0/0") for p in nets_a}
    # A [[route]]'s network and the LANs reach each other both ways (add_route's rules).
    for r in config.route:
        for dev_a, nets_a in lan_nets.values():
            forward |= {(dev_a, p, r.interface, str(r.to)) for p in nets_a}
            forward |= {(r.interface, str(r.to), dev_a, p) for p in nets_a}
    pf_ifaces = {
        i: tuple(uplink_if[n] for n in (pf.uplinks or [u.name for u in config.uplink])
                 if n in uplink_if)
        for i, pf in enumerate(config.port_forward)
    }
    live_idents = {idents[n] for n in usable}
    dead = tuple(sorted(name for name, owner in sticky_sets(spec).items()
                        if owner not in live_idents))
    return TableContents(
        live=tuple(sorted(layout.mark(uid[n]) for n in usable)),
        weights=slot_map,
        bypass4=_collapse4(bypass),
        dns4=dns4,
        source4=source4,
        inbound={i: idents[n] for n, i in uplink_if.items()},
        masquerade=tuple(uplink_if[u.name] for u in config.uplink
                         if u.masquerade and u.name in uplink_if),
        lan_sources=tuple(sorted({(dev, p) for dev, nets in lan_nets.values() for p in nets}
                                 | {(r.interface, str(r.to)) for r in config.route})),
        forward_allowed=tuple(sorted(forward)),
        uplink_addresses=tuple(sorted({str(a.ip) for u in config.uplink
                                       for a in per[u.name].facts.addresses
                                       if isinstance(a.ip, IPv4Address)})),
        mss_clamped=tuple(sorted({dev for dev in uplink_if.values()
                                  if config.firewall.clamp_mss is True
                                  or dev.startswith(MSS_CLAMP_DEVICES)})),
        port_forward_ifaces=pf_ifaces,
        dead_sticky_sets=dead,
    )
