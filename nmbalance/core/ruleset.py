"""Render our nft table as text (nft 1.0.6's JSON rejects typeof maps and
dynamic sets; libnftables applies a text buffer as one transaction too).

The table is split in two: the *structure* (chains, rules, empty sets and
maps) depends only on the config; the *contents* (weights, live marks,
interfaces, bypass prefixes, DNS servers) change with health and discovery
and are rewritten as flush + add element commands, without touching a rule.

Marks stay inside the configured mask: nft 1.0.6 cannot OR a register into a
mark, so every uplink has tiny chains that set its constant bits
(`up_X` for meta + ct mark, `rs_X` to restore the meta mark).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from nmbalance.core.rulemap import Classify, RuleMap
from nmbalance.core.slots import SLOTS

# An empty chain whose name carries the structure's digest: nft 1.0.6 leaves
# table comments out of its JSON output, but always lists chain names.
DIGEST_CHAIN_PREFIX = "structure_"
DEFAULT_GROUP = "default"


def ident(name: str) -> str:
    """An nft-safe identifier for an uplink or rule name, one-to-one: letters and
    digits stay, anything else becomes _XX (its hex code). So no identifier
    ever holds "__" or ends in "_", and "__" can join two of them unambiguously."""
    return re.sub(r"[^A-Za-z0-9]", lambda m: f"_{ord(m.group()):02x}", name)


def rule_group(name: str) -> str:
    """The group identifier of a [[rule]]: by its name, so a reorder keeps its sets."""
    return "R" + ident(name)


def restore_chain(uplink: str) -> str:
    """The chain the restore map sends an uplink's flows to (uplink: its ident)."""
    return f"rs_{uplink}"

STICKY_KEYS = {"source": "ip saddr", "destination": "ip daddr", "pair": "ip saddr . ip daddr"}
STICKY_KEYS6 = {"source": "ip6 saddr", "destination": "ip6 daddr",
                "pair": "ip6 saddr . ip6 daddr"}


@dataclass(frozen=True)
class MarkedUplink:
    ident: str
    mark: int


@dataclass(frozen=True)
class Group:
    """A balancing method over some uplinks: the global mode or one [[rule]]."""

    ident: str
    kind: str  # "weights" (weighted and friends), "persistence" or "enforced"
    uplinks: tuple[str, ...]  # idents
    persistence_by: str = "source"
    persistence_timeout: int = 600
    fallback: bool = False  # no usable uplink here: use the global mode instead
    race: bool = True  # fastest-response: log new destinations for the daemon to race


@dataclass(frozen=True)
class PortForwardSpec:
    index: int
    proto: str
    first_port: int
    last_port: int
    to: str
    to_port: int | None
    hairpin: bool = False


@dataclass(frozen=True)
class TableSpec:
    name: str
    mask: int
    uplinks: tuple[MarkedUplink, ...]
    groups: tuple[Group, ...]
    rules: Classify = field(default_factory=Classify)  # the [[rule]]s: first match wins
    restrictive: bool = False
    allow_ssh: bool = False
    ssh_port: int = 22
    clamp_mss: bool = False
    port_forwards: tuple[PortForwardSpec, ...] = ()
    snippets: tuple[tuple[str, str], ...] = ()  # (file path, nft text)
    learn_group: int = 7700  # the NFLOG group new fastest-response destinations go to
    ipv6: bool = False  # an ipv6 mode: IPv6 balanced with its own weights and masqueraded
    npt: bool = False  # ipv6 = "npt": the LANs' prefixes translated into each uplink's
    prefix: bool = False  # ipv6 = "prefix": LAN IPv6 leaves by its source prefix

    @property
    def translates6(self) -> bool:
        """Whether some IPv6 leaves prefix-translated: npt's, and prefix's rescue."""
        return self.npt or self.prefix


@dataclass(frozen=True)
class TableContents:
    live: tuple[int, ...] = ()
    weights: Mapping[str, Sequence[tuple[int, int, str]]] = field(default_factory=dict)
    bypass4: tuple[str, ...] = ()
    dns4: Mapping[str, str] = field(default_factory=dict)  # address -> uplink ident
    source4: Mapping[str, str] = field(default_factory=dict)  # an uplink's address -> its ident
    inbound: Mapping[str, str] = field(default_factory=dict)  # ifname -> uplink ident
    masquerade: tuple[str, ...] = ()
    # (device, prefix): who counts as the LAN (firewall, hairpin): the LANs, and the
    # networks of [[route]]s, as Net-ISP-Balance's add_route trusted them.
    lan_sources: tuple[tuple[str, str], ...] = ()
    # (in device, source prefix, out device, destination prefix) that may start a
    # connection through the router: the LAN side only.
    forward_allowed: tuple[tuple[str, str, str, str], ...] = ()
    uplink_addresses: tuple[str, ...] = ()  # hairpin: the uplinks' own addresses
    mss_clamped: tuple[str, ...] = ()  # devices whose TCP MSS is clamped to the route's MTU
    port_forward_ifaces: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    dead_sticky_sets: tuple[str, ...] = ()
    # IPv6 (spec.ipv6): the same as the IPv4 ones above, from the uplinks' IPv6 health.
    weights6: Mapping[str, Sequence[tuple[int, int, str]]] = field(default_factory=dict)
    bypass6: tuple[str, ...] = ()
    dns6: Mapping[str, str] = field(default_factory=dict)
    source6: Mapping[str, str] = field(default_factory=dict)
    masquerade6: tuple[str, ...] = ()
    dead_sticky_sets6: tuple[str, ...] = ()  # IPv6 sticky sets of uplinks whose IPv6 is out
    # npt: uplink ident -> its (LAN prefix, translated prefix) pairs; and the devices
    # that translate -> the uplink ident whose pairs they use.
    npt6: Mapping[str, Sequence[tuple[str, str]]] = field(default_factory=dict)
    npt6_devices: Mapping[str, str] = field(default_factory=dict)
    # prefix: each uplink's prefix6 -> the uplink ident its sources leave by; and every
    # prefix6, whose sources are never masqueraded.
    prefix6_src: Mapping[str, str] = field(default_factory=dict)
    native6: tuple[str, ...] = ()


def sticky_set(group: str, uplink: str, family: int = 4) -> str:
    return f"st_{group}__{uplink}" if family == 4 else f"st6_{group}__{uplink}"


# Groups whose sets of entries pin traffic to an uplink: learned by the datapath
# (persistence) or by the daemon's races (fastest-response, by destination).
STICKY_KINDS = ("persistence", "fastest")
LEARN_PREFIX = "nmb:"  # the log prefix of a new fastest-response destination: nmb:GROUP


def _sticky_families(spec: TableSpec, g: Group) -> tuple[int, ...]:
    """The families group `g` has sticky sets for: IPv4's, and IPv6's under an ipv6 mode."""
    if g.kind not in STICKY_KINDS:
        return ()
    return (4, 6) if spec.ipv6 else (4,)


def _sticky_groups(spec: TableSpec, family: int | None = None) -> list[tuple[Group, int]]:
    """Each group with sticky sets, once per family it has them for (or for `family`)."""
    return [(g, f) for g in spec.groups for f in _sticky_families(spec, g)
            if family in (None, f)]


def sticky_sets(spec: TableSpec, family: int | None = None) -> dict[str, str]:
    """Every sticky set name (of `family`, or of both) -> the uplink ident its
    members are pinned to."""
    return {sticky_set(g.ident, u, f): u
            for g, f in _sticky_groups(spec, family) for u in g.uplinks}


def sticky_timeouts(spec: TableSpec) -> dict[str, int]:
    """Every sticky set name -> its timeout in seconds."""
    return {sticky_set(g.ident, u, family): g.persistence_timeout
            for g, family in _sticky_groups(spec) for u in g.uplinks}


def asked_set(group: str, family: int = 4) -> str:
    """fastest-response: destinations already handed to the daemon to race."""
    return f"asked_{group}" if family == 4 else f"asked6_{group}"


ASKED_TIMEOUT = 60  # seconds before a destination that was not learned is asked again
LEARN_RATE = 100  # new destinations a second at most: a scan must not make us race it
LEARN_BURST = 500  # ... after a burst of this many (a page that opens many hosts at once)


def learn_chain(group: str, uplink: str, family: int = 4) -> str:
    return f"learn_{group}__{uplink}" if family == 4 else f"learn6_{group}__{uplink}"


def new_counter(uplink: str) -> str:
    """The named counter of the new connections an uplink (its ident) took."""
    return f"new_{uplink}"


def unident(text: str) -> str:
    """The name an ident() stands for."""
    return re.sub(r"_([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def up_chain(uplink: str) -> str:
    """The chain that gives a new connection an uplink's (its ident's) mark."""
    return f"up_{uplink}"


def pick_target(group: Group, uplink: str, family: int = 4) -> str:
    """The chain a group's weight map (of that family) sends a new connection to for
    `uplink`."""
    return (learn_chain(group.ident, uplink, family) if group.kind == "persistence"
            else up_chain(uplink))


def npt_maps(uplink: str) -> tuple[str, str]:
    """npt: the maps of an uplink's (ident's) translations, outward and inward."""
    return f"npt6_{uplink}", f"nptin6_{uplink}"


def _npt_chains(spec: TableSpec) -> list[str]:
    """Stateful prefix translation (conntrack translates the replies, and the ICMPv6
    errors they carry): LAN sources leaving an uplink take its prefix, and new
    connections to that prefix come in to the LAN host it stands for. A source no
    map holds (the router's own) falls through to masquerade."""
    out = ["  map npt6_out { type ifname : verdict; }"]
    interval = "type ipv6_addr : interval ipv6_addr; flags interval;"
    for u in spec.uplinks:
        out_map, in_map = npt_maps(u.ident)
        out.append(f"  map {out_map} {{ {interval} }}")
        out.append(f"  chain npt_{u.ident} {{ snat ip6 prefix to ip6 saddr map @{out_map}; }}")
        if spec.npt:
            out.append(f"  map {in_map} {{ {interval} }}")
            out.append(f"  chain nptin_{u.ident} {{ dnat ip6 prefix to ip6 daddr map @{in_map}; }}")
    if spec.npt:  # prefix's addresses are routed in as they are
        out += ["  map npt6_in { type ifname : verdict; }",
                "  chain npt_inbound {",
                "    type nat hook prerouting priority dstnat; policy accept;",
                "    meta nfproto ipv6 iifname vmap @npt6_in",
                "  }"]
    return out


def _set_bits(mark: int, mask: int, what: str) -> str:
    keep = ~mask & 0xFFFFFFFF
    return f"{what} set {what} and {keep:#010x} or {mark:#010x}"


def render_snippets(spec: TableSpec) -> str:
    """The administrator's snippets, each after a comment naming its file."""
    return "".join(f"# snippet {path}\n{text.rstrip()}\n" for path, text in spec.snippets)


def render_structure(spec: TableSpec) -> tuple[str, str]:
    """The whole table with empty sets and maps, replacing any old one in the
    same transaction; and its digest (of the table and the snippets applied
    with it), which the table carries by name."""
    body = _table_body(spec)
    digest = hashlib.sha256((body + render_snippets(spec)).encode()).hexdigest()[:16]
    t = spec.name
    # The comment names no digest: a change in place cannot update a table's comment.
    head = (f"table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{\n"
            f'  comment "nmbalance"\n  chain {DIGEST_CHAIN_PREFIX}{digest} {{}}\n')
    return digest, head + body


def _table_body(spec: TableSpec) -> str:
    """Everything inside `table inet NAME { ... }` after its header, and the closing brace."""
    out: list[str] = []
    add = out.append
    add("  set live { type mark; }")
    add("  set bypass4 { type ipv4_addr; flags interval; auto-merge; }")
    add("  set masq { type ifname; }")
    add("  map dns4 { type ipv4_addr : verdict; }")
    add("  map source4 { type ipv4_addr : verdict; }")
    add("  map inbound { type ifname : verdict; }")
    add("  set uplink_ifs { type ifname; }")
    add("  set lan_sources { type ifname . ipv4_addr; flags interval; }")
    restore = ", ".join(f"{u.mark:#x} : goto {restore_chain(u.ident)}" for u in spec.uplinks)
    add(f"  map restore {{ typeof ct mark : verdict; elements = {{ {restore} }} }}")
    if spec.ipv6:
        add("  set bypass6 { type ipv6_addr; flags interval; auto-merge; }")
        add("  set masq6 { type ifname; }")
        add("  map dns6 { type ipv6_addr : verdict; }")
        add("  map source6 { type ipv6_addr : verdict; }")
    if spec.prefix:
        add("  map prefix6_src { type ipv6_addr : verdict; flags interval; }")
        add("  set native6 { type ipv6_addr; flags interval; }")
    for g in spec.groups:
        if g.kind != "enforced":
            add(f"  map w_{g.ident} {{ typeof numgen random mod {SLOTS} : verdict; flags interval; }}")
            if spec.ipv6:
                add(f"  map w6_{g.ident} {{ typeof numgen random mod {SLOTS} : verdict; "
                    "flags interval; }")
        for family in _sticky_families(spec, g):
            for u in g.uplinks:
                add(f"  set {sticky_set(g.ident, u, family)} {{ typeof "
                    f"{_sticky_key(g, family)}; flags dynamic,timeout; "
                    f"timeout {g.persistence_timeout}s; }}")
            if g.kind == "fastest" and g.race:
                add(f"  set {asked_set(g.ident, family)} {{ typeof {_sticky_key(g, family)}; "
                    f"flags dynamic,timeout; timeout {ASKED_TIMEOUT}s; size 65536; }}")
    for m in _rule_maps(spec):
        add(f"  map {m.name} {{ type {m.type} : verdict; flags interval; "
            f"elements = {{ {', '.join(m.elements)} }} }}")
    for m in (step for step in spec.rules.steps if isinstance(step, RuleMap)):
        for b in m.buckets:
            add(f"  chain {b.name} {{ {b.key} vmap @{b.name}; goto {m.after}; }}")
    for up in spec.uplinks:
        # Every new connection an uplink takes passes its up_ chain once: counted
        # there, for the share measured and the metrics (established ones never do).
        add(f"  counter {new_counter(up.ident)} {{ }}")
        add(f"  chain up_{up.ident} {{")
        add(f"    counter name \"{new_counter(up.ident)}\"")
        add(f"    {_set_bits(up.mark, spec.mask, 'meta mark')}")
        add(f"    {_set_bits(up.mark, spec.mask, 'ct mark')}")
        add("  }")
        add(f"  chain {restore_chain(up.ident)} {{ {_set_bits(up.mark, spec.mask, 'meta mark')}; }}")
    for g in spec.groups:
        out.extend(_group_chains(g, spec.learn_group, spec.ipv6))
    add("  chain classify {")
    add("    ip daddr @bypass4 return")
    add("    ip daddr vmap @dns4")
    if spec.ipv6:
        add("    ip6 daddr @bypass6 return")
        add("    ip6 daddr vmap @dns6")
    if spec.prefix:
        # The host chose its uplink when it chose its source address.
        add("    ip6 saddr vmap @prefix6_src")
    for step in spec.rules.steps:
        if isinstance(step, RuleMap):
            # A port key reads ports only where the packet has them.
            guard = {True: " meta l4proto { tcp, udp, sctp }", None: "",
                     False: " meta l4proto != { tcp, udp, sctp }"}[step.ported]
            if step.elements:
                add(f"    meta nfproto {step.family}{guard} {step.key} vmap @{step.name}")
            if step.index:
                # Its buckets continue, when they miss, where this chain would have.
                add(f"    meta nfproto {step.family}{guard} {step.index.key} "
                    f"vmap @{step.index.name}")
                add(f"    goto {step.after}")
                add("  }")
                add(f"  chain {step.after} {{")
        else:
            add(f"    {step[0]} goto {step[1]}")
    add("    goto pick_default")
    add("  }")
    mask = f"{spec.mask:#010x}"
    # A connection's uplink back into the packet's mark. With the whole mark ours, a
    # copy; else only our bits, by a map to the uplink's constant (nft 1.0.6 cannot
    # OR a register into a mark).
    restore = ("    ct mark != 0 meta mark set ct mark" if spec.mask == 0xFFFFFFFF
               else f"    ct mark and {mask} vmap @restore")
    # Without an ipv6 mode, IPv6 is left exactly as the system routes it: no mark, no NAT.
    untouched6 = [] if spec.ipv6 else ["    meta nfproto ipv6 return"]
    add("  chain prerouting {")
    add("    type filter hook prerouting priority mangle; policy accept;")
    out.extend(untouched6)
    # Replies from the internet are routed by their destination (a LAN, this host):
    # the most common packet of all needs no mark. Replies from a LAN to a connection
    # that came in by an uplink do: they must leave by it.
    add("    ct direction reply iifname @uplink_ifs return")
    add(restore)
    add("    ct state != new return")
    add("    iifname vmap @inbound")
    add("    fib daddr type local return")
    add("    goto classify")
    add("  }")
    add("  chain output {")
    add("    type route hook output priority mangle; policy accept;")
    out.extend(untouched6)
    add(restore)
    add("    ct state != new return")
    add("    oifname \"lo\" return")
    # A socket that set its own mark (SO_MARK) chose its uplink already; ICMP
    # (pings, our probes; for IPv6 neighbour discovery too) follows the
    # source-address rules of its uplink.
    add(f"    meta mark and {mask} != 0 return")
    add("    meta l4proto { icmp, ipv6-icmp } return" if spec.ipv6 else
        "    meta l4proto icmp return")
    # A socket bound to an uplink's address chose that uplink.
    add("    ip saddr vmap @source4")
    if spec.ipv6:
        add("    ip6 saddr vmap @source6")
    add("    goto classify")
    add("  }")
    add("  chain postrouting {")
    add("    type nat hook postrouting priority srcnat; policy accept;")
    if spec.translates6:
        add("    meta nfproto ipv6 oifname vmap @npt6_out")
    if spec.prefix:
        add("    meta nfproto ipv6 ip6 saddr @native6 accept")
    add("    oifname @masq meta nfproto ipv4 masquerade")
    if spec.ipv6:
        add("    oifname @masq6 meta nfproto ipv6 masquerade")
    add("  }")
    if spec.translates6:
        out.extend(_npt_chains(spec))
    if spec.port_forwards:
        out.extend(_port_forward_chains(spec))
    if spec.restrictive:
        out.extend(_firewall_chains(spec))
    if spec.clamp_mss:
        # A path MTU below Ethernet's (PPPoE, tunnels) would blackhole full-size
        # segments where ICMP is filtered: announce what fits.
        out += ["  set mss_clamped { type ifname; }",
                "  chain mss {",
                "    type filter hook forward priority mangle; policy accept;",
                "    meta nfproto ipv4 oifname @mss_clamped tcp flags syn / syn,rst "
                "tcp option maxseg size set rt mtu",
                "  }"]
    add("}")
    return "\n".join(out) + "\n"


def _rule_maps(spec: TableSpec) -> Iterator[RuleMap]:
    """Every map the compiled [[rule]]s look up: buckets and their index included."""
    for m in (step for step in spec.rules.steps if isinstance(step, RuleMap)):
        if m.elements:
            yield m
        if m.index:
            yield m.index
            yield from m.buckets


def _group_chains(g: Group, learn_group: int, ipv6: bool = False) -> list[str]:
    out = [f"  chain pick_{g.ident} {{"]
    if g.kind == "enforced":
        # Both families: the uplink's table holds an unreachable route for one it lacks.
        out.append(f"    goto up_{g.uplinks[0]}")
    else:
        if ipv6:
            # IPv6 has weights of its own: an uplink's IPv6 may be dead while its IPv4 lives.
            out.append(f"    meta nfproto ipv6 goto pick6_{g.ident}")
        out += _sticky_picks(g, learn_group, 4)
        out.append(f"    numgen random mod {SLOTS} vmap @w_{g.ident}")
        if g.fallback:
            out.append("    goto pick_default")
    out.append("  }")
    if ipv6 and g.kind != "enforced":
        out += [f"  chain pick6_{g.ident} {{",
                *_sticky_picks(g, learn_group, 6),
                f"    numgen random mod {SLOTS} vmap @w6_{g.ident}",
                *(["    goto pick6_default"] if g.fallback else []),
                "  }"]
    if g.kind == "persistence":
        families = ((4, STICKY_KEYS), (6, STICKY_KEYS6)) if ipv6 else ((4, STICKY_KEYS),)
        for family, keys in families:
            for u in g.uplinks:
                out.append(f"  chain {learn_chain(g.ident, u, family)} {{")
                out.append(f"    update @{sticky_set(g.ident, u, family)} "
                           f"{{ {keys[g.persistence_by]} }}")
                out.append(f"    goto up_{u}")
                out.append("  }")
    return out


def _sticky_picks(g: Group, learn_group: int, family: int) -> list[str]:
    """A pick chain's lookups before the weights, for one family: the sticky or
    learned entries, and fastest-response's hand-over of new destinations."""
    if g.kind not in STICKY_KINDS:
        return []
    key = _sticky_key(g, family)
    out = [f"    {key} @{sticky_set(g.ident, u, family)} goto up_{u}" for u in g.uplinks]
    if g.kind == "fastest" and g.race:
        # A destination not seen yet: the daemon races it over the uplinks, while
        # this first connection takes the weighted choice at once. The limit is
        # per family: a scan of one does not starve the other's learning.
        asked = asked_set(g.ident, family)
        out.append(f"    {key} != @{asked} limit rate {LEARN_RATE}/second "
                   f"burst {LEARN_BURST} packets add @{asked} {{ {key} }} log prefix "
                   f"\"{LEARN_PREFIX}{g.ident}\" group {learn_group} queue-threshold 1")
    return out


def _sticky_key(g: Group, family: int = 4) -> str:
    """What a group's sticky sets are keyed by, in `family`."""
    if g.kind == "fastest":
        return "ip daddr" if family == 4 else "ip6 daddr"
    return (STICKY_KEYS if family == 4 else STICKY_KEYS6)[g.persistence_by]


def _port_forward_chains(spec: TableSpec) -> list[str]:
    out = ["  chain dstnat {", "    type nat hook prerouting priority dstnat; policy accept;"]
    snat = []
    for pf in spec.port_forwards:
        ports = (
            str(pf.first_port) if pf.first_port == pf.last_port
            else f"{pf.first_port}-{pf.last_port}"
        )
        target = pf.to if pf.to_port is None else f"{pf.to}:{pf.to_port}"
        out.append(f"    iifname @pf{pf.index} {pf.proto} dport {ports} dnat ip to {target}")
        if pf.hairpin:
            # From a LAN to an uplink's own address, as from outside; masqueraded, so
            # the LAN host answers through the router and not straight back.
            out.append(f"    iifname . ip saddr @lan_sources ip daddr @uplink_addresses "
                       f"{pf.proto} dport {ports} dnat ip to {target}")
            to_ports = ports if pf.to_port is None else str(pf.to_port)
            snat.append(f"    iifname . ip saddr @lan_sources ct status dnat ip daddr {pf.to} "
                        f"{pf.proto} dport {to_ports} masquerade")
    out.append("  }")
    if snat:
        out += ["  chain hairpin {", "    type nat hook postrouting priority srcnat - 1; "
                "policy accept;", *snat, "  }"]
    head = [f"  set pf{pf.index} {{ type ifname; }}" for pf in spec.port_forwards]
    if any(pf.hairpin for pf in spec.port_forwards):
        head.append("  set uplink_addresses { type ipv4_addr; }")
    return head + out


def _firewall_chains(spec: TableSpec) -> list[str]:
    """Net-ISP-Balance's restrictive firewall: the router takes what its LANs send
    (from their own prefixes), replies, DHCP answers and pings at 1/s; connections
    through it start on the LAN side, or at a port forward."""
    out = [
        "  set forward_allowed { type ifname . ipv4_addr . ifname . ipv4_addr; flags interval; }",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        "    meta nfproto ipv6 accept",  # IPv6 is the system's own firewall's to judge
        "    ct state established,related accept",
        "    ct state invalid drop",
        '    iifname "lo" accept',
        "    iifname . ip saddr @lan_sources accept",
        # A DHCP client's unicast answers conntrack can't pair with a broadcast request;
        # and a LAN client without an address yet, asking the router's DHCP server.
        "    udp sport 67 udp dport 68 accept",
        "    ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
        "    icmp type echo-request limit rate 1/second accept",
    ]
    if spec.allow_ssh:
        out.append(f"    tcp dport {spec.ssh_port} accept")
    out += [
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    meta nfproto ipv6 accept",
        "    ct state established,related accept",
        "    ct state invalid drop",
        "    ct status dnat accept",  # a port forward's, or another program's DNAT
        "    iifname . ip saddr . oifname . ip daddr @forward_allowed accept",
        "  }",
    ]
    return out


def _elements(items: Iterable[str]) -> str:
    return ", ".join(items)


def _slots(g: Group, ranges: Iterable[tuple[int, int, str]], family: int = 4) -> list[str]:
    """A weight map's elements: each slot range to its uplink's chain."""
    return [(f"{lo}-{hi}" if lo != hi else str(lo)) + f" : goto {pick_target(g, u, family)}"
            for lo, hi, u in ranges]


def render_contents(spec: TableSpec, contents: TableContents) -> str:
    t = spec.name
    out: list[str] = []

    def fill(kind: str, name: str, items: Sequence[str]) -> None:
        out.append(f"flush {kind} inet {t} {name}")
        if items:
            out.append(f"add element inet {t} {name} {{ {_elements(items)} }}")

    fill("set", "live", [f"{m:#x}" for m in contents.live])
    fill("set", "bypass4", contents.bypass4)
    fill("set", "masq", [f'"{i}"' for i in contents.masquerade])
    fill("map", "dns4", [f"{a} : goto up_{u}" for a, u in contents.dns4.items()])
    fill("map", "source4", [f"{a} : goto up_{u}" for a, u in contents.source4.items()])
    fill("map", "inbound", [f'"{i}" : goto up_{u}' for i, u in contents.inbound.items()])
    fill("set", "uplink_ifs", [f'"{i}"' for i in contents.inbound])
    for g in spec.groups:
        if g.kind == "enforced":
            continue
        fill("map", f"w_{g.ident}", _slots(g, contents.weights.get(g.ident, ())))
    for name in (*contents.dead_sticky_sets, *contents.dead_sticky_sets6):
        out.append(f"flush set inet {t} {name}")
    if spec.ipv6:
        fill("set", "bypass6", contents.bypass6)
        fill("set", "masq6", [f'"{i}"' for i in contents.masquerade6])
        fill("map", "dns6", [f"{a} : goto up_{u}" for a, u in contents.dns6.items()])
        fill("map", "source6", [f"{a} : goto up_{u}" for a, u in contents.source6.items()])
        for g in spec.groups:
            if g.kind != "enforced":
                fill("map", f"w6_{g.ident}", _slots(g, contents.weights6.get(g.ident, ()), 6))
    if spec.translates6:
        fill("map", "npt6_out", [f'"{i}" : jump npt_{u}' for i, u in contents.npt6_devices.items()])
        for up in spec.uplinks:
            pairs = contents.npt6.get(up.ident, ())
            out_map, in_map = npt_maps(up.ident)
            fill("map", out_map, [f"{lan} : {wan}" for lan, wan in pairs])
            if spec.npt:
                fill("map", in_map, [f"{wan} : {lan}" for lan, wan in pairs])
    if spec.npt:
        fill("map", "npt6_in", [f'"{i}" : jump nptin_{u}'
                                for i, u in contents.npt6_devices.items()])
    if spec.prefix:
        fill("map", "prefix6_src", [f"{p} : goto up_{u}" for p, u in contents.prefix6_src.items()])
        fill("set", "native6", contents.native6)
    fill("set", "lan_sources", [f'"{i}" . {p}' for i, p in contents.lan_sources])
    if spec.restrictive:
        fill("set", "forward_allowed", [f'"{a}" . {p} . "{b}" . {q}'
                                        for a, p, b, q in contents.forward_allowed])
    for pf in spec.port_forwards:
        fill("set", f"pf{pf.index}", [f'"{i}"' for i in contents.port_forward_ifaces.get(pf.index, ())])
    if any(pf.hairpin for pf in spec.port_forwards):
        fill("set", "uplink_addresses", contents.uplink_addresses)
    if spec.clamp_mss:
        fill("set", "mss_clamped", [f'"{i}"' for i in contents.mss_clamped])
    return "\n".join(out) + "\n"
