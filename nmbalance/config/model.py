"""The configuration model (contract: DESIGN.md "Config").

Every model forbids unknown keys, so a typo is an error with a suggestion
rather than a silently ignored setting. Types are strict, as TOML has types
(`weight = true` or `interval_ms = "2000"` is an error, not 1 or 2000), and
every number, string and list is bounded, so no input can make validation
slow or a rendered table huge.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nmbalance.config.values import (
    AnyPrefix,
    DnsServer,
    Gateway6Address,
    GatewayAddress,
    LanHost,
    Prefix,
    Prefix6,
    ProbeTarget,
    printable,
)

METHOD_ALIASES = {"balanced": "weighted", "failover": "priority"}

Method = Literal[
    "weighted",
    "priority",
    "overflow",
    "persistence",
    "least-used",
    "lowest-latency",
    "enforced",
    "fastest-response",
]
PersistenceKey = Literal["source", "destination", "pair"]


def _alias_method(value: object) -> object:
    return METHOD_ALIASES.get(value, value) if isinstance(value, str) else value


NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
# What the kernel accepts in an interface name, minus characters we would have
# to escape in nft text; validated here so no name ever reaches a parser unchecked.
IFNAME_PATTERN = r"^[A-Za-z0-9_.+-]{1,15}$"
IfName = Annotated[str, Field(pattern=IFNAME_PATTERN)]
# A LAN may be an address label on a device ("eth3:0", as `ip addr add ... label`
# makes): the label's addresses on that device. Labels fit in IFNAMSIZ too.
LAN_IFNAME_PATTERN = r"^[A-Za-z0-9_.+-]{1,15}(:[A-Za-z0-9_.+-]{1,14})?$"
LanIfName = Annotated[str, Field(max_length=15, pattern=LAN_IFNAME_PATTERN)]
# Net-ISP-Balance's shorthands in a forwarding group: every ISP, every LAN.
GROUP_SHORTHANDS = (":isp", ":lan")
GROUP_MEMBER_PATTERN = r"^([A-Za-z0-9_.-]{1,32}|:isp|:lan)$"
GroupMember = Annotated[str, Field(pattern=GROUP_MEMBER_PATTERN)]
MethodName = Annotated[Method, BeforeValidator(_alias_method)]

_PORT_RANGE = re.compile(r"^(\d{1,5})-(\d{1,5})$")


def _port_spec(value: object) -> object:
    """Accept 443 or "1000-2000"; return (low, high)."""
    if isinstance(value, bool):
        raise ValueError("expected a port number or a range like \"1000-2000\"")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str) and (m := _PORT_RANGE.fullmatch(value)):
        low, high = int(m.group(1)), int(m.group(2))
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        low = high = int(value)
    else:
        raise ValueError("expected a port number or a range like \"1000-2000\"")
    if not (1 <= low <= high <= 65535):
        raise ValueError(f"port range {low}-{high} is outside 1-65535 or reversed")
    return (low, high)


PortSpec = Annotated[tuple[int, int], BeforeValidator(_port_spec)]
# Addresses for sendmail's To: header, comma-separated; no spaces, control
# characters or newlines, so nothing can be injected into the message.
_MAILBOX = r"[^\s\x00-\x1f\x7f@,;<>]+(@[^\s\x00-\x1f\x7f@,;<>]+)?"
EMAIL_LIST = rf"^{_MAILBOX}(,{_MAILBOX})*$"


def at_most(limit: int) -> Callable[[object], object]:
    """Refuse an oversized list before its items are validated one by one: a
    crafted file with 100,000 entries is then as cheap to refuse as one with 300."""
    def check(value: object) -> object:
        if isinstance(value, list) and len(value) > limit:
            raise ValueError(f"List should have at most {limit} items, not {len(value)}")
        return value
    return check


Text = Annotated[str, Field(min_length=1, max_length=256),
                 AfterValidator(lambda v: printable(v, "text"))]
# An absolute path: printable, so logs and `convert` output stay one line each.
FilePath = Annotated[str, Field(max_length=4096, pattern=r"^/"),
                     AfterValidator(lambda v: printable(v, "path"))]
# Where an empty value ("") means "none", as for snippets_dir.
OptionalPath = Annotated[str, Field(max_length=4096, pattern=r"^(/.*)?$"),
                         AfterValidator(lambda v: printable(v, "path"))]
# Routing protocol numbers other programs own (iproute2's rt_protos): ours must
# never be one of them, or we would take their routes for ours and delete them.
RESERVED_PROTOCOLS = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra",
    10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp",
    17: "mrouted", 18: "keepalived", 42: "babel", 99: "openr", 186: "bgp", 187: "isis",
    188: "ospf", 189: "rip", 192: "eigrp",
}
FREE_PROTOCOLS = (200, 254)  # unassigned by iproute2 and by the routing daemons it lists


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True,
                              strict=True)


Mbps = Annotated[int | float, Field(gt=0, le=10_000_000, allow_inf_nan=False)]
# Methods that measure load against the uplinks' line rates.
CAPACITY_METHODS = ("overflow", "least-used")


class Uplink(Strict):
    name: Name
    interface: IfName | None = None
    connection: Text | None = None
    # Any non-negative number, as Net-ISP-Balance takes; 0 is a backup, used only
    # while no uplink of positive weight is.
    weight: Annotated[int | float, Field(ge=0, le=1_000_000, allow_inf_nan=False)] = 1
    gateway: Literal["auto"] | GatewayAddress = "auto"
    # IPv6's next hop, shown in status (link-local allowed: paired with the interface);
    # "auto": from the uplink's IPv6 default route.
    gateway6: Literal["auto"] | Gateway6Address = "auto"
    # ipv6 = "npt": the prefix the ISP routes to this router (delegated or static),
    # which the LANs' IPv6 prefixes are translated into on their way out.
    prefix6: Prefix6 | None = None
    probe: Annotated[list[ProbeTarget], BeforeValidator(at_most(16))] = []
    dns: Annotated[list[DnsServer], BeforeValidator(at_most(16))] = []
    masquerade: bool = True
    # Line rates in Mbit/s, for overflow and least-used; capacity_mbps sets both.
    capacity_mbps: Mbps | None = None
    download_mbps: Mbps | None = None
    upload_mbps: Mbps | None = None

    @property
    def download(self) -> float | None:
        return self.download_mbps or self.capacity_mbps

    @property
    def upload(self) -> float | None:
        return self.upload_mbps or self.capacity_mbps

    def probes(self, family: int) -> list[IPv4Address | IPv6Address | str]:
        """Its probe targets of one family: IPv6 addresses for 6; for 4 the rest (IPv4
        addresses, host names resolved to IPv4, "gateway")."""
        return [t for t in self.probe if isinstance(t, IPv6Address) == (family == 6)]

    @model_validator(mode="after")
    def _needs_a_device(self) -> Uplink:
        if self.interface is None and self.connection is None:
            raise ValueError("an uplink needs `interface` or `connection`")
        return self


class Lan(Strict):
    name: Name
    interface: LanIfName

    @property
    def device(self) -> str:
        """The device an address label sits on ("eth3" for "eth3:0")."""
        return self.interface.split(":", 1)[0]


class HealthSettings(Strict):
    """When an uplink counts as up (DESIGN.md "Health"); names follow lsm where it has them."""

    interval_ms: Annotated[int, Field(ge=100, le=60_000)] = 1000
    # How long a round waits for replies; unset: the interval, at most 500 ms, so a
    # silent failure is seen within interval x max_successive_pkts_lost + 0.5 s.
    # Raise it for links whose round trip can exceed that (satellite).
    timeout_ms: Annotated[int, Field(ge=10, le=60_000)] | None = None
    # How many of an uplink's probe targets must answer for a round to count as a reply.
    reliability: Annotated[int, Field(ge=1, le=16)] = 1
    max_packet_loss: Annotated[int, Field(ge=0, le=100)] = 15
    min_packet_loss: Annotated[int, Field(ge=0, le=100)] = 5
    max_successive_pkts_lost: Annotated[int, Field(ge=1, le=1000)] = 3
    min_successive_pkts_rcvd: Annotated[int, Field(ge=1, le=1000)] = 5
    loss_window: Annotated[int, Field(ge=4, le=1000)] = 20
    # Median round-trip time above which an uplink is degraded; unset: never.
    max_latency_ms: Annotated[int, Field(ge=1, le=60_000)] | None = None
    # A degraded uplink stays in rotation with this percentage of its weight (its share
    # of new connections); under priority, healthy uplinks rank before degraded ones.
    degraded_weight_percent: Annotated[int, Field(ge=1, le=100)] = 50
    long_down_time: Annotated[int, Field(ge=0, le=7 * 86400)] = 120
    # Seconds an uplink must stay healthy before it takes new traffic again; doubled for
    # each further failure within flap_window, up to max_hold_time.
    hold_time: Annotated[float, Field(ge=0, le=3600)] = 5.0
    flap_window: Annotated[float, Field(ge=0, le=86400)] = 120.0
    max_hold_time: Annotated[float, Field(ge=0, le=86400)] = 300.0
    # Every uplink looks down but some have carrier: keep using those rather than
    # cutting the site off (a probe target may be what failed).
    fail_open: bool = True

    @model_validator(mode="after")
    def _hysteresis(self) -> HealthSettings:
        if self.min_packet_loss > self.max_packet_loss:
            raise ValueError("min_packet_loss must not exceed max_packet_loss")
        if self.timeout_ms is not None and self.timeout_ms > self.interval_ms:
            raise ValueError("timeout_ms must not exceed interval_ms (one round at a time)")
        if self.max_hold_time < self.hold_time:
            raise ValueError("max_hold_time must not be shorter than hold_time")
        return self

    @property
    def round_timeout_ms(self) -> int:
        return self.timeout_ms or min(self.interval_ms, 500)


class DaemonSettings(Strict):
    """How `nmbalance run` behaves."""

    hooks_dir: OptionalPath | None = "/etc/nmbalance/hooks.d"
    hook_timeout: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # What SIGTERM leaves behind: "keep" the last applied state (flows keep
    # their uplink across a restart) or "flush" everything nmbalance installed.
    on_stop: Literal["keep", "flush"] = "keep"
    # Netlink events come in bursts; one reconcile per burst.
    debounce_ms: Annotated[int, Field(ge=0, le=5000)] = 10
    # Seconds between read-backs of what we own in the kernel (nft table, routes,
    # rules), on top of the kernel's own change events; 0: events only.
    verify_interval: Annotated[float, Field(ge=0, le=3600)] = 15.0
    # The program warn_email hands messages to; unset: /usr/sbin/sendmail or /usr/lib/sendmail.
    sendmail: FilePath | None = None


def _listen(value: object) -> object:
    """ADDRESS:PORT, the address an IP literal ([..] for IPv6): never a name to resolve."""
    if not isinstance(value, str):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} should be ADDRESS:PORT, such as 127.0.0.1:9617")
    try:
        ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise ValueError(f"{host!r} should be an IP address (127.0.0.1, [::1])") from None
    return value


class RadvdSettings(Strict):
    """ipv6 = "prefix": the router advertisements the LANs get, written by nmbalance as
    a whole radvd config of its own and handed to radvd by SIGHUP, so a dead
    uplink's prefix is deprecated on every LAN host within an advertisement."""

    # The file nmbalance owns and rewrites (radvd -C it; in /run/nmbalance, where the
    # daemon may write); never the system's radvd.conf.
    config: FilePath = "/run/nmbalance/radvd.conf"
    pidfile: FilePath = "/run/radvd.pid"
    # RFC 9096's figures for a CE router: short enough that a renumbered prefix goes soon.
    preferred_lifetime: Annotated[int, Field(ge=1, le=86400)] = 2700
    valid_lifetime: Annotated[int, Field(ge=1, le=172800)] = 5400
    # Unsolicited advertisements at most this many seconds apart (radvd: 4 to 1800);
    # a change is sent at once on reload.
    max_interval: Annotated[int, Field(ge=4, le=1800)] = 30

    @model_validator(mode="after")
    def _lifetimes(self) -> RadvdSettings:
        if self.preferred_lifetime > self.valid_lifetime:
            raise ValueError("preferred_lifetime cannot be longer than valid_lifetime")
        return self


class MetricsSettings(Strict):
    """Prometheus metrics; `nmbalance metrics` prints them whatever these say."""

    # Serve /metrics over HTTP here (ADDRESS:PORT); unset: not served.
    listen: Annotated[str, BeforeValidator(_listen)] | None = None
    # Write them for node_exporter's textfile collector; unset: not written.
    textfile: FilePath | None = None
    # The daemon samples every 5 s: writing more often would repeat the same figures.
    textfile_interval: Annotated[float, Field(ge=5, le=3600)] = 15.0


class Rule(Strict):
    name: Name
    # IPv4 and IPv6 prefixes (IPv6 ones need an ipv6 mode: cross_check)
    src: Annotated[list[AnyPrefix], BeforeValidator(at_most(1024))] = []
    dst: Annotated[list[AnyPrefix], BeforeValidator(at_most(1024))] = []
    proto: Literal["tcp", "udp", "sctp", "icmp", "icmpv6"] | None = None
    sport: Annotated[list[PortSpec], BeforeValidator(at_most(64))] = []
    dport: Annotated[list[PortSpec], BeforeValidator(at_most(64))] = []
    iif: Annotated[list[IfName], BeforeValidator(at_most(64))] = []
    method: MethodName
    uplinks: Annotated[list[Name], Field(min_length=1), BeforeValidator(at_most(255))]
    persistence_by: PersistenceKey | None = None
    persistence_timeout: Annotated[int, Field(ge=1, le=7 * 86400)] | None = None
    # fastest-response: race each new destination over the uplinks (short extra
    # connections to it); false: its connections use the weights.
    race: bool = True

    def families(self) -> tuple[int, ...]:
        """The address families this rule can match: those its prefixes and its
        protocol allow (a rule with neither matches both)."""
        found = {4, 6}
        for prefixes in (self.src, self.dst):
            if prefixes:
                found &= {p.version for p in prefixes}
        if self.proto in ("icmp", "icmpv6"):
            found &= {4 if self.proto == "icmp" else 6}
        return tuple(sorted(found))

    @model_validator(mode="after")
    def _coherent(self) -> Rule:
        if not self.families():
            raise ValueError("src, dst and proto have no address family in common: the "
                             "rule could never match (IPv4 and IPv6 prefixes may be mixed "
                             "in a list; each family matches its own)")
        if (self.sport or self.dport) and self.proto not in ("tcp", "udp", "sctp"):
            raise ValueError("sport/dport need proto = \"tcp\", \"udp\" or \"sctp\"")
        if self.method == "enforced" and len(self.uplinks) != 1:
            raise ValueError("method \"enforced\" takes exactly one uplink")
        if len(set(self.uplinks)) != len(self.uplinks):
            raise ValueError("uplinks lists a name twice")
        return self


TABLE_PATTERN = r"^nmbalance[A-Za-z0-9_]{0,23}$"


class KernelSettings(Strict):
    # Always "nmbalance..." so it can never be an nft keyword or another program's table.
    table: Annotated[str, Field(pattern=TABLE_PATTERN)] = "nmbalance"
    mark_mask: Annotated[int, Field(gt=0, le=0xFFFFFFFF)] = 0x0000FF00
    route_table_base: Annotated[int, Field(ge=256, le=0xFFFF0000)] = 7700
    rule_priority_base: Annotated[int, Field(ge=1, le=32000)] = 7700
    route_protocol: int = 211
    flush_conntrack: bool = True
    # net.ipv4.ip_forward: "auto" turns it on when LANs are configured (a router);
    # `flush` puts back the value nmbalance found. false: never touched.
    ip_forward: Literal["auto"] | bool = "auto"
    # The NFLOG group that hands new fastest-response destinations to the daemon.
    learn_log_group: Annotated[int, Field(ge=1, le=65535)] = 7700

    @field_validator("table", mode="before")
    @classmethod
    def _table_name(cls, value: object) -> object:
        if isinstance(value, str) and not value.startswith("nmbalance"):
            raise ValueError(f"table {value!r} must start with \"nmbalance\" (so it can never "
                             "be an nft keyword or another program's table)")
        return value

    @field_validator("route_protocol")
    @classmethod
    def _free_protocol(cls, proto: int) -> int:
        low, high = FREE_PROTOCOLS
        if proto in RESERVED_PROTOCOLS:
            raise ValueError(f"route_protocol {proto} is {RESERVED_PROTOCOLS[proto]!r}'s: "
                             f"nmbalance would take its routes for its own; use {low}-{high}")
        if not low <= proto <= high:
            raise ValueError(f"route_protocol must be {low}-{high}, numbers no standard "
                             "routing daemon uses")
        return proto

    @field_validator("mark_mask")
    @classmethod
    def _contiguous(cls, mask: int) -> int:
        shifted = mask >> ((mask & -mask).bit_length() - 1)
        if shifted & (shifted + 1):
            raise ValueError(f"mark_mask {mask:#x} must be one run of contiguous bits")
        return mask

    @field_validator("rule_priority_base")
    @classmethod
    def _below_main(cls, base: int) -> int:
        if base + 2 * 256 >= 32766:
            raise ValueError("rule_priority_base leaves no room below the main table's rule (32766)")
        return base


class FirewallSettings(Strict):
    """Net-ISP-Balance's firewall (DESIGN.md "Firewall"): on for a balance.conf."""

    restrictive: bool = False
    # SSH to the router from the uplinks' side (the LANs may always reach it).
    allow_ssh: bool = False
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22
    # TCP MSS clamped to the route's MTU for connections leaving these uplinks:
    # "auto": ppp and tun devices, whose MTU is below Ethernet's.
    clamp_mss: Literal["auto"] | bool = "auto"


class ForwardingGroup(Strict):
    """Services that may reach each other, the LAN side starting; ":isp" and ":lan"
    stand for all of them. A group of one allows nothing, as in Net-ISP-Balance."""

    members: Annotated[list[GroupMember], Field(min_length=1), BeforeValidator(at_most(512))]


class PortForward(Strict):
    name: Name | None = None
    uplinks: Annotated[list[Name], BeforeValidator(at_most(255))] = []
    proto: Literal["tcp", "udp"] = "tcp"
    port: PortSpec
    to: LanHost
    to_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # Also from the LANs to the uplinks' own addresses, masqueraded so the LAN host
    # answers through the router (Net-ISP-Balance's forward_with_snat).
    hairpin: bool = False


class StaticRoute(Strict):
    """A route nmbalance owns in the main table, for a network no uplink or LAN
    covers (a modem's admin page, a VPN): what Net-ISP-Balance's routes/ scripts
    added. The main table is looked up before any uplink's, so it holds for
    every connection, balanced or not."""

    to: Prefix
    interface: IfName
    via: GatewayAddress | None = None


class Config(Strict):
    mode: MethodName = "weighted"
    persistence_by: PersistenceKey = "source"
    persistence_timeout: Annotated[int, Field(ge=1, le=7 * 86400)] = 600
    race: bool = True  # fastest-response as the mode: see Rule.race
    # "off": IPv6 is left exactly as the system routes it; "nat66": balanced and
    # masqueraded per uplink like IPv4; "npt": balanced like nat66, the LANs' prefixes
    # translated one to one into each uplink's prefix6; "prefix": each LAN gets a /64 of
    # every uplink's prefix6 by router advertisement, and IPv6 leaves by its source
    # prefix, in priority order (the dead or standby ones deprecated).
    ipv6: Literal["off", "nat66", "npt", "prefix"] = "off"
    uplink: Annotated[list[Uplink], Field(min_length=1), BeforeValidator(at_most(255))]
    lan: Annotated[list[Lan], BeforeValidator(at_most(256))] = []
    health: HealthSettings = HealthSettings()
    rule: Annotated[list[Rule], BeforeValidator(at_most(10_000))] = []
    kernel: KernelSettings = KernelSettings()
    firewall: FirewallSettings = FirewallSettings()
    daemon: DaemonSettings = DaemonSettings()
    metrics: MetricsSettings = MetricsSettings()
    radvd: RadvdSettings = RadvdSettings()
    forwarding_group: Annotated[list[ForwardingGroup], BeforeValidator(at_most(256))] = []
    port_forward: Annotated[list[PortForward], BeforeValidator(at_most(4096))] = []
    route: Annotated[list[StaticRoute], BeforeValidator(at_most(4096))] = []
    snippets_dir: OptionalPath | None = "/etc/nmbalance/nft.d"
    warn_email: Annotated[str, Field(max_length=1024, pattern=EMAIL_LIST)] | None = None

    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> Config:
        # The loader runs cross_check itself so it can point at lines.
        if not (info.context or {}).get("defer_cross_check"):
            problems = cross_check(self)
            if problems:
                raise ValueError("; ".join(msg for _, msg in problems))
        return self


Loc = tuple[str | int, ...]
# The ipv6 modes that balance IPv6 per uplink with marks, as IPv4 is.
IPV6_BALANCED = ("nat66", "npt", "prefix")
PREFIX_MODES = ("npt", "prefix")  # the modes that use the uplinks' prefix6


def _ipv6_problems(config: Config) -> list[tuple[Loc, str]]:
    """What the chosen ipv6 mode cannot do, refused rather than done some other way."""
    problems: list[tuple[Loc, str]] = []
    with_prefix = [(i, u) for i, u in enumerate(config.uplink) if u.prefix6 is not None]
    if config.ipv6 not in PREFIX_MODES:
        problems += [(("uplink", i, "prefix6"), f"prefix6 is used only with ipv6 = \"npt\" "
                      f"or \"prefix\" (ipv6 = {config.ipv6!r} has no use for it)")
                     for i, _ in with_prefix]
    elif not with_prefix:
        problems.append((("ipv6",), f"ipv6 = \"{config.ipv6}\" needs the uplinks' prefix6, "
                         "and no uplink has one: give each uplink's delegated prefix as "
                         "prefix6, or use \"nat66\""))
    if config.ipv6 == "prefix":
        problems += _prefix_problems(config)
    for n, (i, u) in enumerate(with_prefix):
        for _, v in with_prefix[:n]:
            if u.prefix6 is not None and v.prefix6 is not None and u.prefix6.overlaps(v.prefix6):
                problems.append((("uplink", i, "prefix6"), f"prefix6 {u.prefix6} overlaps "
                                 f"uplink {v.name!r}'s {v.prefix6}"))
    if config.ipv6 == "off":
        for i, r in enumerate(config.rule):
            field = next((f for f, prefixes in (("src", r.src), ("dst", r.dst))
                          if any(p.version == 6 for p in prefixes)), "proto")
            if r.families() == (6,) or field != "proto":
                what = "matches IPv6 only" if r.families() == (6,) else "has IPv6 prefixes"
                problems.append((("rule", i, field), f"rule {r.name!r} {what}, and ipv6 = "
                                 "\"off\" leaves IPv6 to the system: set ipv6 = \"nat66\" "
                                 "(or npt, prefix) to balance it"))
        for i, u in enumerate(config.uplink):
            six = [str(t) for t in u.probe if isinstance(t, IPv6Address)]
            if six:
                problems.append((("uplink", i, "probe"), f"probe target {six[0]} is IPv6, and "
                                 "ipv6 = \"off\" leaves IPv6 to the system: set ipv6 = "
                                 "\"nat66\" to balance it"))
        return problems
    return problems


def _prefix_problems(config: Config) -> list[tuple[Loc, str]]:
    """ipv6 = "prefix" carves a /64 per LAN out of every prefix6, and needs LANs."""
    problems: list[tuple[Loc, str]] = []
    if not config.lan:
        problems.append((("ipv6",), "ipv6 = \"prefix\" advertises the uplinks' prefixes on "
                         "the LANs, and there is no [[lan]]"))
    for i, u in enumerate(config.uplink):
        if u.prefix6 is not None and 2 ** (64 - u.prefix6.prefixlen) < len(config.lan):
            problems.append((("uplink", i, "prefix6"), f"prefix6 {u.prefix6} holds "
                             f"{2 ** (64 - u.prefix6.prefixlen)} /64, and there are "
                             f"{len(config.lan)} LANs to give one each"))
    return problems


def mark_capacity(mask: int) -> int:
    """How many uplink marks fit in `mask` (value 0 means "no uplink")."""
    return min(mask >> ((mask & -mask).bit_length() - 1), 255)


def cross_check(config: Config) -> list[tuple[Loc, str]]:
    """Problems that span several sections, each with the field it belongs to."""
    problems: list[tuple[Loc, str]] = []
    seen_names: dict[str, Loc] = {}
    seen_ifaces: dict[str, Loc] = {}
    entries: list[tuple[Loc, str, str | None]] = [
        *[
            (("uplink", i), u.name, u.interface) for i, u in enumerate(config.uplink)],
        *[(("lan", i), lan.name, lan.interface) for i, lan in enumerate(config.lan)],
    ]
    for loc, name, iface in entries:
        if name in seen_names:
            problems.append(((*loc, "name"), f"name {name!r} is already used"))
        seen_names.setdefault(name, loc)
        if iface is not None:
            if iface in seen_ifaces:
                problems.append(((*loc, "interface"), f"interface {iface!r} is already used"))
            seen_ifaces.setdefault(iface, loc)
    uplinks = {u.name for u in config.uplink}
    for i, rule in enumerate(config.rule):
        for name in rule.uplinks:
            if name not in uplinks:
                problems.append((("rule", i, "uplinks"), f"unknown uplink {name!r}"))
    for i, group in enumerate(config.forwarding_group):
        for name in group.members:
            if name not in seen_names and name not in GROUP_SHORTHANDS:
                problems.append((("forwarding_group", i, "members"), f"unknown service {name!r}"))
    for i, fwd in enumerate(config.port_forward):
        for name in fwd.uplinks:
            if name not in uplinks:
                problems.append((("port_forward", i, "uplinks"), f"unknown uplink {name!r}"))
    # What each measured method needs of every uplink it may use.
    needs = (
        (("lowest-latency",), {u.name for u in config.uplink if u.probe},
         "compares probe round trips: uplink {name!r} needs probe targets"),
        (CAPACITY_METHODS, {u.name for u in config.uplink if u.download or u.upload},
         "measures load against capacity: uplink {name!r} needs download_mbps or "
         "upload_mbps (capacity_mbps sets both)"),
    )
    users: list[tuple[Loc, str, list[str]]] = [
        (("rule", i, "method"), r.method, r.uplinks) for i, r in enumerate(config.rule)]
    users.append((("mode",), config.mode, [u.name for u in config.uplink]))
    for methods, having, why in needs:
        for loc, method, members in users:
            if method in methods:
                problems += [(loc, f"method {method!r} " + why.format(name=name))
                             for name in members if name in uplinks and name not in having]
    problems += _ipv6_problems(config)
    room = mark_capacity(config.kernel.mark_mask)
    if len(config.uplink) > room:
        problems.append(
            (("uplink",), f"{len(config.uplink)} uplinks do not fit in kernel.mark_mask "
             f"{config.kernel.mark_mask:#x} (room for {room})")
        )
    return problems
