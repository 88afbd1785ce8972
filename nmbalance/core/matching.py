"""What a [[rule]] matches, once: as nft text for the ruleset's classify chain
and as a test of one connection for `explain`. Both come from the same
conditions, so explain cannot disagree with the datapath about a rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from nmbalance.config.model import Rule

PORT_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Connection:
    """The first packet of a new connection, as far as the rules look at it."""

    dst: IPv4Address
    src: IPv4Address | None = None
    proto: str | None = None  # tcp, udp, sctp, icmp
    sport: int | None = None
    dport: int | None = None
    iif: str | None = None


@dataclass(frozen=True)
class Condition:
    what: str  # "saddr", "daddr", "iif", "proto", "sport", "dport"
    values: tuple[Any, ...]

    def nft(self) -> str:
        if self.what in ("saddr", "daddr"):
            return f"ip {self.what} {{ {', '.join(str(v) for v in self.values)} }}"
        if self.what == "iif":
            return "iifname { " + ", ".join(f'"{v}"' for v in self.values) + " }"
        if self.what == "proto":
            return f"meta l4proto {self.values[0]}"
        return f"th {self.what} {{ {_spans(self.values, ', ')} }}"

    def admits(self, c: Connection) -> bool:
        if self.what in ("saddr", "daddr"):
            addr = c.src if self.what == "saddr" else c.dst
            return addr is not None and any(
                addr in net for net in self.values if isinstance(net, IPv4Network))
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


def conditions(rule: Rule) -> list[Condition]:
    """In the order nft tests them: addresses, then interface, protocol and ports."""
    out = []
    if rule.src:
        out.append(Condition("saddr", tuple(rule.src)))
    if rule.dst:
        out.append(Condition("daddr", tuple(rule.dst)))
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
    """nft match expressions for a [[rule]] (IPv4: the config takes no IPv6 prefixes yet)."""
    return [" ".join(c.nft() for c in conditions(rule))]


def first_unmet(rule: Rule, c: Connection) -> Condition | None:
    """The first condition of `rule` the connection does not meet; None: it matches."""
    return next((cond for cond in conditions(rule) if not cond.admits(c)), None)


def _spans(values: Sequence[tuple[int, int]], sep: str) -> str:
    return sep.join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in values)
