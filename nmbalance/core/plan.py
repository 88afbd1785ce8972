"""The Plan: data that says what the kernel should hold. apply turns it into changes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nmbalance.core.prefix6 import RadvdPlan
from nmbalance.core.ruleset import TableContents, TableSpec, sticky_sets

MAIN_TABLE = 254


class UplinkStatus(StrEnum):
    ACTIVE = "active"  # takes new connections
    STANDBY = "standby"  # healthy, but another uplink is preferred (priority)
    LEFT_OUT = "left-out"  # not selected by the administrator
    DOWN = "down"
    NO_GATEWAY = "no-gateway"
    ABSENT = "absent"  # its interface is not there
    ERROR = "error"  # the kernel refused its routes; retried with backoff

    @property
    def usable(self) -> bool:
        return self in (UplinkStatus.ACTIVE, UplinkStatus.STANDBY)


DEAD = (UplinkStatus.DOWN, UplinkStatus.NO_GATEWAY, UplinkStatus.ABSENT)


@dataclass(frozen=True)
class UplinkPlan:
    name: str
    ident: str  # nft-safe identifier for chain and set names
    id: int  # by name (core.numbering); mark, table and rule priorities follow from it
    mark: int
    table: int
    interface: str | None
    gateway: str | None
    gateway_source: str
    status: UplinkStatus
    reason: str
    weight: float
    share: float  # of new connections under the global mode
    routed: bool  # has its own routing table
    # IPv6 (ipv6 = "nat66"; status6 None: IPv6 is the system's): the same, apart.
    status6: UplinkStatus | None = None
    reason6: str = ""
    gateway6: str | None = None
    gateway6_source: str = ""
    share6: float = 0.0
    routed6: bool = False
    translation6: str = ""  # npt, prefix: how the LANs' IPv6 leaves by it

    def status_in(self, family: int) -> UplinkStatus | None:
        """Its status in one family (None: IPv6 is the system's)."""
        return self.status if family == 4 else self.status6


@dataclass(frozen=True, order=True)
class Route:
    table: int
    dst: str
    kind: str = "unicast"  # or "unreachable"
    gateway: str | None = None
    interface: str | None = None
    family: int = 4

    def describe(self) -> str:
        prefix = "" if self.kind == "unicast" else f"{self.kind} "
        via = f" via {self.gateway}" if self.gateway else ""
        dev = f" dev {self.interface}" if self.interface else ""
        return f"{prefix}{self.dst}{via}{dev} table {self.table}"


@dataclass(frozen=True, order=True)
class RoutingRule:
    priority: int
    table: int
    family: int = 4
    fwmark: int | None = None
    fwmask: int | None = None
    src: str | None = None
    suppress_prefixlength: int | None = None

    def describe(self) -> str:
        sel = "from all" if self.src is None else f"from {self.src}"
        if self.fwmark is not None:
            sel += f" fwmark {self.fwmark:#x}/{self.fwmask or 0xFFFFFFFF:#x}"
        table = "main" if self.table == MAIN_TABLE else str(self.table)
        suppress = (
            f" suppress_prefixlength {self.suppress_prefixlength}"
            if self.suppress_prefixlength is not None
            else ""
        )
        return f"{self.priority}: {sel} lookup {table}{suppress}"


@dataclass(frozen=True)
class NftPlan:
    table: str
    digest: str  # of the structure: equal digests mean only contents differ
    structure: str  # the whole table, sets and maps empty (rendered from spec)
    contents_text: str  # flush + add element commands that fill it (rendered from contents)
    spec: TableSpec
    contents: TableContents  # what health and discovery change, as data
    snippets_text: str = ""  # the administrator's snippets, applied after the table

    @property
    def sticky_sets(self) -> dict[str, str]:
        """Sticky set name -> the ident of the uplink its members are pinned to."""
        return sticky_sets(self.spec)

    def full_transaction(self) -> str:
        """The table made anew and filled: its sets start empty, so the contents'
        flushes are left out (each would be parsed and sent for nothing)."""
        fills = "".join(f"{line}\n" for line in self.contents_text.splitlines()
                        if not line.startswith("flush "))
        return self.structure + self.snippets_text + fills


@dataclass(frozen=True)
class Plan:
    uplinks: tuple[UplinkPlan, ...]
    nft: NftPlan
    routes: tuple[Route, ...]
    rules: tuple[RoutingRule, ...]
    mark_mask: int
    route_protocol: int
    live_marks: frozenset[int]
    warnings: tuple[str, ...] = ()
    radvd: RadvdPlan | None = None  # ipv6 = "prefix": the LANs' router advertisements
    forwarding: bool = False  # net.ipv4.ip_forward must be on (a router with LANs)

    @property
    def dead_marks(self) -> frozenset[int]:
        """Uplinks that cannot carry traffic: their flows' conntrack entries may go.
        A healthy uplink left out or on standby keeps its established flows."""
        return frozenset(u.mark for u in self.uplinks if u.status in DEAD)

    @property
    def dead_marks6(self) -> frozenset[int]:
        """The same for IPv6 flows (their ct marks are the uplinks' marks too)."""
        return frozenset(u.mark for u in self.uplinks if u.status6 in DEAD)

    def uplink(self, name: str) -> UplinkPlan:
        found = self.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def get(self, name: str) -> UplinkPlan | None:
        """The uplink's plan, or None (an uplink a reload added, say)."""
        return next((u for u in self.uplinks if u.name == name), None)

    def describe(self) -> str:
        """What --dry-run prints: the ruleset, the routes and the rules."""
        lines = ["# uplinks"]
        for u in self.uplinks:
            gw = f" via {u.gateway} ({u.gateway_source})" if u.gateway else ""
            lines.append(
                f"#   {u.name}: {u.status.value}{' - ' + u.reason if u.reason else ''}; "
                f"dev {u.interface or '?'}{gw}; mark {u.mark:#x}; table {u.table}; "
                f"share {u.share:.3f}"
            )
            if u.status6 is not None:
                gw6 = f" via {u.gateway6} ({u.gateway6_source})" if u.gateway6 else ""
                lines.append(f"#   {u.name} IPv6: {u.status6.value}"
                             f"{' - ' + u.reason6 if u.reason6 else ''}{gw6}; "
                             f"share {u.share6:.3f}"
                             + (f"; {u.translation6}" if u.translation6 else ""))
        lines += [f"# warning: {w}" for w in self.warnings]
        lines.append("# nft transaction")
        lines.append(self.nft.full_transaction().rstrip())
        lines.append(f"# routes (proto {self.route_protocol})")
        lines += [r.describe() for r in self.routes]
        lines.append(f"# rules (proto {self.route_protocol})")
        lines += [r.describe() for r in self.rules]
        if self.radvd is not None:
            lines.append(f"# radvd config {self.radvd.path} (reloaded by {self.radvd.pidfile})")
            lines += self.radvd.text.rstrip().splitlines()
        return "\n".join(lines) + "\n"
