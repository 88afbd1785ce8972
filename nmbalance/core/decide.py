"""decide(config, facts) -> Plan. Pure: the same inputs give the same Plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

from nmbalance.config.model import IPV6_BALANCED, PREFIX_MODES, Config, Rule, Uplink
from nmbalance.core.decide6 import (
    chosen_by_source,
    collapse,
    contents6,
    dns_servers,
    gateway6,
    local_networks,
    npt_contents,
    own_addresses,
    why_unrouted6,
)
from nmbalance.core.facts import Facts, GatewaySource, Health, UplinkFacts
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
from nmbalance.core.prefix6 import RadvdPlan, advertised, lan_block, prefix_contents, render_radvd
from nmbalance.core.rulemap import compile_rules
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

# Methods that choose by weights the daemon computes from measurements; until
# it has them (a one-shot apply never does) they use the configured weights.
ADAPTIVE = ("overflow", "least-used", "lowest-latency", "fastest-response")


@dataclass(frozen=True)
class Decision:
    """One uplink on its own, in one family: how it is reached and whether it may
    take traffic."""

    facts: UplinkFacts
    gateway: str | None
    gateway_source: str
    routed: bool  # gets a routing table of its own (a default route in it)
    status: UplinkStatus
    reason: str
    health: Health = Health.UP  # that family's

    @property
    def interface(self) -> str | None:
        return self.facts.interface


def _status(f: UplinkFacts, routed: bool, selected: frozenset[str] | None,
            refused: str | None, family: int, no_route: str) -> tuple[UplinkStatus, str]:
    if not f.present:
        return UplinkStatus.ABSENT, f.gateway_reason or "interface not found"
    if not f.carrier:
        return UplinkStatus.DOWN, "no carrier" if f.up else f"{f.interface} is down"
    if not routed:
        return UplinkStatus.NO_GATEWAY, no_route
    if refused is not None:
        return UplinkStatus.ERROR, refused
    health, why = (f.health, f.health_reason) if family == 4 else (f.health6, f.health6_reason)
    if health == Health.DOWN:
        return UplinkStatus.DOWN, why or "probes failing"
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


def _decide_one(u: Uplink, f: UplinkFacts, selected: frozenset[str] | None,
                refused: str | None, family: int = 4) -> Decision:
    if family == 4:
        gateway, source = _gateway(u.gateway, f)
        no_route, reachable = f.gateway_reason or "no gateway found", True
    else:
        gateway, source = gateway6(u, f)
        no_route, reachable = why_unrouted6(f)
    # The kernel takes no route through an interface that is administratively down.
    routed = (f.present and f.up and refused is None and reachable
              and (gateway is not None or f.point_to_point))
    status, reason = _status(f, routed or refused is not None, selected, refused, family,
                             no_route)
    return Decision(f, gateway, source, routed, status, reason,
                    f.health if family == 4 else f.health6)


def _fail_open(per: Mapping[str, Decision], selected: frozenset[str] | None) -> set[str]:
    """Uplinks that only the probes call down: when all are, the probe targets
    may be what failed, and cutting the whole site off helps nobody."""
    return {
        name for name, d in per.items()
        if d.status is UplinkStatus.DOWN and d.facts.carrier and d.routed
        and d.health is Health.DOWN and (selected is None or name in selected)
    }


@dataclass
class _Family:
    """One address family's view of the uplinks while decide() works."""

    family: int
    per: dict[str, Decision]
    usable: set[str]
    degraded: set[str]
    weights: dict[str, float]
    degraded_percent: int
    share: dict[str, float]
    slot_map: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    taking: set[str] = field(default_factory=set)  # in some group's rotation
    enforced: set[str] = field(default_factory=set)  # the targets of enforced groups

    def state(self, name: str) -> tuple[UplinkStatus, str]:
        d = self.per[name]
        status, reason = d.status, d.reason
        if status.usable and name not in self.taking:
            status, reason = UplinkStatus.STANDBY, "a preferred uplink is up"
        if status is UplinkStatus.ACTIVE and name in self.degraded:
            why = d.facts.health_reason if self.family == 4 else d.facts.health6_reason
            reason = f"degraded ({why}): {self.degraded_percent}% of its weight"
        return status, reason


def _judge(config: Config, facts: Facts, family: int, selected: frozenset[str] | None,
           refused: Mapping[str, str], warnings: list[str]) -> _Family:
    """Every uplink's decision in one family, and which of them may take traffic."""
    per = {u.name: _decide_one(u, facts.uplink(u.name), selected, refused.get(u.name), family)
           for u in config.uplink}
    usable = {name for name, d in per.items() if d.status.usable}
    if not usable and config.health.fail_open:
        usable = _fail_open(per, selected)
        if usable:
            what = "uplink" if family == 4 else "uplink's IPv6"
            warnings.append(f"every {what} looks down; failing open over those with carrier: "
                            + ", ".join(u.name for u in config.uplink if u.name in usable))
            for name in usable:
                per[name] = replace(per[name], status=UplinkStatus.ACTIVE,
                                    reason="fail-open: " + (per[name].reason or "probes failing"))
    degraded = {name for name in usable if per[name].health is Health.DEGRADED}
    percent = config.health.degraded_weight_percent
    weights = {u.name: u.weight * (percent / 100 if u.name in degraded else 1.0)
               for u in config.uplink}
    return _Family(family, per, usable, degraded, weights, percent,
                   dict.fromkeys(per, 0.0))


def _distribute(f: _Family, groups: Sequence[Group], methods: Mapping[str, str],
                members: Mapping[str, list[str]], measured: Mapping[str, Mapping[str, float]],
                idents: Mapping[str, str]) -> None:
    """Each group's weights as slot ranges over the family's usable uplinks."""
    for g in groups:
        if g.kind == "enforced":
            continue
        # Measured weights stand while their uplinks can take traffic; the moment none
        # can (between a failure and the daemon's next figures), the configured ones.
        ranges = allocate([(n, w) for n, w in measured.get(g.ident, {}).items()
                           if n in f.usable and n in members[g.ident]])
        if not ranges:
            ranges = allocate(_group_weights(methods[g.ident], members[g.ident], f.weights,
                                             f.degraded, f.usable))
        f.slot_map[g.ident] = [(r.first, r.last, idents[r.name]) for r in ranges]
        f.taking |= {r.name for r in ranges}
        if g.ident == DEFAULT_GROUP:
            f.share.update({r.name: r.size / SLOTS for r in ranges})
    f.enforced = {members[g.ident][0] for g in groups if g.kind == "enforced"}
    f.taking |= f.enforced & f.usable


def _route(f: _Family, name: str, layout: Layout, i: int, iface: str | None,
           routes: list[Route], rules: list[RoutingRule]) -> None:
    """An uplink's table in one family: its default route and the rules into it."""
    d, table = f.per[name], layout.table(i)
    default = "0.0.0.0/0" if f.family == 4 else "::/0"
    if d.routed:
        routes.append(Route(table, default, gateway=d.gateway, interface=iface, family=f.family))
    elif name in f.enforced:
        routes.append(Route(table, default, kind="unreachable", family=f.family))
    if d.routed or name in f.enforced:
        rules.append(RoutingRule(layout.fwmark_priority(i), table, family=f.family,
                                 fwmark=layout.mark(i), fwmask=layout.mask))
    if d.routed:
        host = 32 if f.family == 4 else 128
        for ip in own_addresses(d.facts, f.family):
            rules.append(RoutingRule(layout.source_priority(i), table, family=f.family,
                                     src=f"{ip}/{host}"))


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


def rule_groups(config: Config) -> list[tuple[Rule, str]]:
    """Each [[rule]] with its group identifier. Rules that balance alike (method,
    uplinks, persistence and race settings) share one group, named after the first
    of them: a thousand rules over the same uplinks are one weight map and one chain."""
    by_settings: dict[tuple[object, ...], str] = {}
    used: dict[str, int] = {}
    out = []
    for rule in config.rule:
        same = (rule.method, tuple(rule.uplinks), rule.persistence_by,
                rule.persistence_timeout, rule.race)
        if same not in by_settings:
            gid = rule_group(rule.name)
            used[gid] = used.get(gid, 0) + 1
            by_settings[same] = gid if used[gid] == 1 else f"{gid}__{used[gid]}"
        out.append((rule, by_settings[same]))
    return out


def rule_group_leaders(config: Config) -> list[tuple[Rule, str]]:
    """Each group of [[rule]]s once, with the first rule of it (which all its rules
    balance like)."""
    leaders: dict[str, Rule] = {}
    for rule, gid in rule_groups(config):
        leaders.setdefault(gid, rule)
    return [(rule, gid) for gid, rule in leaders.items()]


def racing_groups(config: Config) -> list[str]:
    """The groups whose method is fastest-response with its races on."""
    out = [DEFAULT_GROUP] if config.mode == "fastest-response" and config.race else []
    return out + [gid for rule, gid in rule_group_leaders(config)
                  if rule.method == "fastest-response" and rule.race]


def decide(
    config: Config,
    facts: Facts,
    selected: frozenset[str] | None = None,
    snippets: tuple[tuple[str, str], ...] = (),
    ids: Mapping[str, int] | None = None,
    refused: Mapping[str, str] | None = None,
    measured: Mapping[str, Mapping[str, float]] | None = None,
    measured6: Mapping[str, Mapping[str, float]] | None = None,
) -> Plan:
    """`ids`: the uplinks' previous ids (core.numbering), kept where they still
    apply; `refused`: uplinks whose routes the kernel refused, with its reason;
    `measured`: weights the daemon worked out from measurements (core.adaptive),
    by group, for groups whose method needs them; `measured6`: the same for IPv6,
    from the IPv6 figures (None: `measured` serves both families)."""
    layout = layout_of(config)
    names = [u.name for u in config.uplink]
    uid = assign(names, ids or {}, layout.capacity)
    idents = {n: ident(n) for n in names}
    refused = refused or {}
    warnings: list[str] = []
    measured = measured or {}

    # 1. Each uplink alone, per family: where it is, how it is reached, whether it
    # may be used.
    fam = _judge(config, facts, 4, selected, refused, warnings)
    fam6 = (_judge(config, facts, 6, selected, refused, warnings)
            if config.ipv6 in IPV6_BALANCED else None)
    per = fam.per

    # 2. The groups: the global mode, then each [[rule]] in order.
    groups: list[Group] = [
        Group(DEFAULT_GROUP, _group_kind(config.mode), tuple(idents[n] for n in names),
              config.persistence_by, config.persistence_timeout, race=config.race)
    ]
    methods = {DEFAULT_GROUP: config.mode}
    members = {DEFAULT_GROUP: names}
    for rule, gid in rule_group_leaders(config):
        groups.append(Group(
            gid, _group_kind(rule.method), tuple(idents[n] for n in rule.uplinks),
            rule.persistence_by or config.persistence_by,
            rule.persistence_timeout or config.persistence_timeout,
            fallback=True, race=rule.race,
        ))
        methods[gid] = rule.method
        members[gid] = list(rule.uplinks)
    for method in sorted({m for g, m in methods.items() if g not in measured} & set(ADAPTIVE)):
        warnings.append(f"method {method!r} needs the daemon's measurements; using weights")

    # 3. Weights -> slot ranges per group, per family.
    _distribute(fam, groups, methods, members, measured, idents)
    if fam6 is not None:
        _distribute(fam6, groups, methods, members,
                    measured if measured6 is None else measured6, idents)
    # ipv6 = "prefix": the one uplink whose prefix is preferred on the LANs.
    top6 = None
    if config.ipv6 == "prefix" and fam6 is not None:
        with6 = [u.name for u in config.uplink if u.prefix6 is not None]
        chosen = _group_weights("priority", with6, fam6.weights, fam6.degraded, fam6.usable)
        top6 = chosen[0][0] if chosen else None

    # 4. Kernel routing: a table per routed uplink (enforced ones get one even
    # when unreachable, so their traffic never leaks to another uplink).
    uplinks: list[UplinkPlan] = []
    routes: list[Route] = []
    rules: list[RoutingRule] = [
        RoutingRule(layout.suppress_priority, MAIN_TABLE, family=f.family, suppress_prefixlength=0)
        for f in (fam, fam6) if f is not None
    ]
    # [[route]]s, on the devices there are (one that is gone would be refused).
    routes += [Route(MAIN_TABLE, str(r.to), gateway=str(r.via) if r.via else None,
                     interface=r.interface) for r in config.route if r.interface in facts.links]
    for u in config.uplink:
        i = uid[u.name]
        iface = per[u.name].interface or u.interface
        status, reason = fam.state(u.name)
        for f in (fam, fam6):
            if f is not None:
                _route(f, u.name, layout, i, iface, routes, rules)
        if config.ipv6 in PREFIX_MODES and u.prefix6 and fam6 and fam6.per[u.name].routed:
            # What comes in for a part of prefix6 no LAN stands for is refused here, not
            # sent back out by the default route to bounce until its hop limit runs out.
            routes.append(Route(layout.table(i), str(u.prefix6), kind="unreachable", family=6))
        six = fam6.state(u.name) if fam6 is not None else (None, "")
        if top6 is not None and six[0] is not None and six[0].usable and u.name != top6:
            six = (UplinkStatus.STANDBY, f"its prefix is deprecated while {top6} is up")
        d6 = fam6.per[u.name] if fam6 is not None else None
        uplinks.append(UplinkPlan(
            name=u.name, ident=idents[u.name], id=i, mark=layout.mark(i), table=layout.table(i),
            interface=iface, gateway=per[u.name].gateway,
            gateway_source=per[u.name].gateway_source, status=status, reason=reason,
            weight=u.weight, share=fam.share[u.name], routed=per[u.name].routed,
            status6=six[0], reason6=six[1], gateway6=d6.gateway if d6 else None,
            gateway6_source=d6.gateway_source if d6 else "",
            share6=(float(u.name == top6) if config.ipv6 == "prefix"
                    else fam6.share[u.name] if fam6 is not None else 0.0),
            routed6=bool(d6 and d6.routed),
            translation6=_translation6(config, u, top6, six[0]),
        ))
    if config.ipv6 == "prefix":
        # Each LAN's blocks are on-link there, the dead uplinks' too: their hosts keep
        # those addresses (valid, deprecated), and rescued replies come back to them.
        present = {lan.name for lan in facts.lans if lan.present}
        routes += [Route(MAIN_TABLE, str(lan_block(u.prefix6, k)), interface=lan.device,
                         family=6)
                   for k, lan in enumerate(config.lan) if lan.name in present
                   for u in config.uplink if u.prefix6 is not None]

    # 5. The nft table.
    spec = TableSpec(
        name=config.kernel.table,
        mask=layout.mask,
        uplinks=tuple(sorted((MarkedUplink(idents[n], layout.mark(uid[n])) for n in names),
                             key=lambda m: m.mark)),
        groups=tuple(groups),
        rules=compile_rules([(rule, f"pick_{gid}") for rule, gid in rule_groups(config)],
                            config.ipv6 in IPV6_BALANCED),
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
        ipv6=fam6 is not None,
        npt=config.ipv6 == "npt",
        prefix=config.ipv6 == "prefix",
    )
    contents = _contents(config, facts, per, idents, fam.usable, fam.slot_map, spec, layout, uid)
    if fam6 is not None:
        contents = replace(contents, **contents6(config, facts, fam6.per, idents, fam6.usable,
                                                 fam6.slot_map, spec))
    if spec.npt and fam6 is not None:
        contents = replace(contents, **npt_contents(config, facts, fam6.per, idents, warnings))
    radvd = None
    if spec.prefix and fam6 is not None:
        contents = replace(contents, **prefix_contents(config, fam6.per, fam6.usable, top6,
                                                       idents))
        radvd = RadvdPlan(config.radvd.config, config.radvd.pidfile,
                          render_radvd(config.radvd, advertised(config, top6)))
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
        live_marks=frozenset(layout.mark(uid[n]) for n in names if n in fam.usable),
        warnings=tuple(warnings),
        radvd=radvd,
        forwarding=config.kernel.ip_forward is True or (
            config.kernel.ip_forward == "auto" and bool(config.lan)),
    )


def _translation6(config: Config, u: Uplink, top6: str | None,
                  status6: UplinkStatus | None) -> str:
    """How the LANs' IPv6 leaves by this uplink, for the plan's description."""
    if config.ipv6 == "npt":
        return f"npt into {u.prefix6}" if u.prefix6 else "masquerade"
    if config.ipv6 != "prefix":
        return ""
    if u.prefix6 is None:
        return "no prefix6: LAN IPv6 does not leave by it"
    state = "preferred" if u.name == top6 else "deprecated"
    rescued = (f", its sources leave by {top6} translated" if top6 and u.name != top6
               and status6 not in (UplinkStatus.ACTIVE, UplinkStatus.STANDBY) else "")
    return f"prefix {u.prefix6} {state} on the LANs{rescued}"


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
    bypass = local_networks(facts, per, [r.to for r in config.route])
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
    dead = tuple(sorted(name for name, owner in sticky_sets(spec, 4).items()
                        if owner not in live_idents))
    return TableContents(
        live=tuple(sorted(layout.mark(uid[n]) for n in usable)),
        weights=slot_map,
        bypass4=collapse(bypass, 4),
        dns4=dns_servers(config, per, usable, idents, 4),
        source4=chosen_by_source(config, per, idents, facts.main_default, 4),
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
