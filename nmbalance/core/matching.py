"""What a [[rule]] matches, once: as nft text for the ruleset's classify chain
and as a test of one connection for `explain`. Both come from the same
conditions, so explain cannot disagree with the datapath about a rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nmbalance.config.model import Rule
from nmbalance.inet import AnyAddress

PORT_PROTOCOLS = ("tcp", "udp", "sctp")
NFT_PROTOCOLS = {"icmpv6": "ipv6-icmp"}  # the config's names nft spells otherwise


@dataclass(frozen=True)
class Connection:
    """The first packet of a new connection, as far as the rules look at it."""

    dst: AnyAddress
    src: AnyAddress | None = None  # of dst's family
    proto: str | None = None  # tcp, udp, sctp, icmp, icmpv6
    sport: int | None = None
    dport: int | None = None
    iif: str | None = None


@dataclass(frozen=True)
class Condition:
    what: str  # "saddr", "daddr", "iif", "proto", "sport", "dport"
    values: tuple[Any, ...]

    def nft(self) -> str:
        if self.what in ("saddr", "daddr"):
            ip = "ip" if self.values[0].version == 4 else "ip6"
            return f"{ip} {self.what} {{ {', '.join(str(v) for v in self.values)} }}"
        if self.what == "iif":
            return "iifname { " + ", ".join(f'"{v}"' for v in self.values) + " }"
        if self.what == "proto":
            return f"meta l4proto {NFT_PROTOCOLS.get(self.values[0], self.values[0])}"
        return f"th {self.what} {{ {_spans(self.values, ', ')} }}"

    def admits(self, c: Connection) -> bool:
        if self.what in ("saddr", "daddr"):
            addr = c.src if self.what == "saddr" else c.dst
            return addr is not None and any(addr in net for net in self.values)
        if self.what == "iif":
            return c.iif is not None and c.iif in self.values
        if self.what == "proto":
            return c.proto == str(self.values[0])
        port = c.sport if self.what == "sport" else c.dport
        return port is not None and any(bool(lo <= port <= hi) for lo, hi in self.values)

    def describe(self) -> str:
        """For explain: what this condition asks, in the config's words."""
        if self.what == "proto":
            return f"proto {self.values[0]}"
        if self.what in ("sport", "dport"):
            return f"{self.what} {_spans(self.values, ' ')}"
        names = {"saddr": "src", "daddr": "dst", "iif": "iif"}
        return f"{names[self.what]} {' '.join(str(v) for v in self.values)}"


def conditions(rule: Rule, family: int | None = None) -> list[Condition]:
    """In the order nft tests them: addresses, then interface, protocol and ports.
    `family`: the prefixes of that family only (each family's nft rule has its own)."""
    out = []
    for what, prefixes in (("saddr", rule.src), ("daddr", rule.dst)):
        mine = tuple(p for p in prefixes if family in (None, p.version))
        if prefixes:
            out.append(Condition(what, mine or tuple(prefixes)))
    if rule.iif:
        out.append(Condition("iif", tuple(rule.iif)))
    if rule.proto is not None:
        out.append(Condition("proto", (rule.proto,)))
    if rule.proto in PORT_PROTOCOLS:
        if rule.sport:
            out.append(Condition("sport", tuple(rule.sport)))
        if rule.dport:
            out.append(Condition("dport", tuple(rule.dport)))
    return out


def rule_matches(rule: Rule) -> list[str]:
    """nft match expressions for a [[rule]]: one, or with prefixes of both families,
    one per family (an nft rule tests `ip` or `ip6` addresses, not both)."""
    if not (rule.src or rule.dst):
        return [" ".join(c.nft() for c in conditions(rule))]
    return [" ".join(c.nft() for c in conditions(rule, f)) for f in rule.families()]


def first_unmet(rule: Rule, c: Connection) -> Condition | None:
    """The first condition of `rule` the connection does not meet; None: it matches."""
    family = c.dst.version if c.dst.version in rule.families() else None
    return next((cond for cond in conditions(rule, family) if not cond.admits(c)), None)


def _spans(values: Sequence[tuple[int, int]], sep: str) -> str:
    return sep.join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in values)
