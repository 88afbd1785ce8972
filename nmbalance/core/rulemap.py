"""[[rule]]s compiled into verdict maps, so a new connection costs one lookup
however many rules there are.

A rule is, per address family, a union of boxes in (protocol, source,
destination, source port, destination port). First match wins, so each rule
keeps only what the rules before it left: its boxes minus theirs, cut into
disjoint boxes. Disjoint boxes can then live in one concatenated interval map
(the kernel's pipapo set, which refuses overlaps), and one lookup finds the
one rule a packet meets first.

Rules that name interfaces stay single nft rules between the maps (an interface
name has no ranges to cut), so they keep their place in the order; so do rules
whose conditions would cut into too many boxes. Pure.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from nmbalance.config.model import Rule
from nmbalance.core.matching import PORT_PROTOCOLS, rule_matches

Interval = tuple[int, int]
Box = tuple[Interval, ...]  # (protocol, saddr, daddr, sport, dport)

PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
PORTED = tuple(PROTOCOL_NUMBERS[p] for p in PORT_PROTOCOLS)
ALL_PORTS: Interval = (0, 65535)


def _any(family: int) -> Box:
    top = 2 ** (32 if family == 4 else 128) - 1
    return ((0, 255), (0, top), (0, top), ALL_PORTS, ALL_PORTS)


ANY = {4: _any(4), 6: _any(6)}
ADDRESS = {4: ("ip", "ipv4_addr", IPv4Address), 6: ("ip6", "ipv6_addr", IPv6Address)}
# Past this many boxes a rule stays one nft rule with anonymous sets: 1024
# sources times 1024 destinations would be a million map elements.
BOX_LIMIT = 4096


def _merged(spans: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def rule_boxes(rule: Rule, family: int) -> list[Box] | None:
    """The boxes a rule's conditions cover in `family` (the product of its merged
    value lists); None when the rule cannot match that family."""
    if family not in rule.families():
        return None
    anything = ANY[family]
    nets = [[(int(n.network_address), int(n.broadcast_address))
             for n in prefixes if n.version == family] for prefixes in (rule.src, rule.dst)]
    ported = rule.proto in PORT_PROTOCOLS
    dims = [
        [(PROTOCOL_NUMBERS[rule.proto],) * 2] if rule.proto else [anything[0]],
        _merged(nets[0]) or [anything[1]],
        _merged(nets[1]) or [anything[2]],
        _merged(rule.sport) if ported and rule.sport else [ALL_PORTS],
        _merged(rule.dport) if ported and rule.dport else [ALL_PORTS],
    ]
    return [tuple(b) for b in itertools.product(*dims)]


def _meets(a: Box, b: Box) -> bool:
    for (alo, ahi), (blo, bhi) in zip(a, b, strict=True):  # noqa: SIM110 (the hot path)
        if alo > bhi or blo > ahi:
            return False
    return True


def _minus(b: Box, c: Box) -> list[Box]:
    """b without c, as disjoint boxes (at most two per dimension)."""
    out: list[Box] = []
    rest = list(b)
    for i, ((lo, hi), (clo, chi)) in enumerate(zip(b, c, strict=True)):
        if lo < clo:
            out.append((*rest[:i], (lo, clo - 1), *rest[i + 1:]))
        if hi > chi:
            out.append((*rest[:i], (chi + 1, hi), *rest[i + 1:]))
        rest[i] = (max(lo, clo), min(hi, chi))
    return out


class _Claimed:
    """The boxes earlier rules took, found by overlap quickly: sorted by where they
    start along one dimension (`axis`, where rules differ most), so a box is met only
    by those starting within the longest claimed span before it. Spans wider than
    1/256 of the dimension (a rule for "everything to port 443") are kept apart and
    always looked at, so one of them does not make every search a full scan."""

    def __init__(self, axis: int, top: int) -> None:
        self.axis = axis
        self.wide_from = (top + 1) >> 8
        self.starts: list[int] = []  # sorted
        self.boxes: list[Box] = []  # in the order of starts
        self.longest = 0  # the longest span among the narrow ones
        self.wide: list[Box] = []

    def overlapping(self, b: Box) -> list[Box]:
        lo, hi = b[self.axis]
        first = bisect.bisect_left(self.starts, lo - self.longest)
        last = bisect.bisect_right(self.starts, hi)
        return [c for c in itertools.chain(self.boxes[first:last], self.wide) if _meets(b, c)]

    def add(self, b: Box) -> None:
        lo, hi = b[self.axis]
        if hi - lo >= self.wide_from:
            self.wide.append(b)
            return
        at = bisect.bisect_right(self.starts, lo)
        self.starts.insert(at, lo)
        self.boxes.insert(at, b)
        self.longest = max(self.longest, hi - lo)


def _pieces(claimed: _Claimed, boxes: Sequence[Box], limit: int) -> list[Box] | None:
    """`boxes` minus what `claimed` holds, as disjoint boxes; None past `limit`."""
    out: list[Box] = []
    for box in boxes:
        pieces = [box]
        for taken in claimed.overlapping(box):
            pieces = [p for piece in pieces for p in
                      (_minus(piece, taken) if _meets(piece, taken) else [piece])]
            if len(out) + len(pieces) > limit:
                return None
        out += pieces
    return out


def _protocols(iv: Interval) -> tuple[bool, bool]:
    """Whether a protocol span holds a port protocol, and whether it holds another."""
    ported = sum(iv[0] <= p <= iv[1] for p in PORTED)
    return ported > 0, iv[1] - iv[0] + 1 > ported


@dataclass(frozen=True)
class RuleMap:
    """One verdict map of a compiled run of rules: its name, key, type and elements."""

    name: str
    key: str
    type: str
    elements: tuple[str, ...]
    family: str  # "ipv4" or "ipv6": the nfproto it is looked up for
    ported: bool  # looked up for the port protocols only (its key has their ports)


class _Run:
    """Consecutive map-able rules of one family, compiled as they come."""

    def __init__(self, family: int, axis: int) -> None:
        self.family = family
        self.claimed = _Claimed(axis, ANY[family][axis][1])
        self.pieces: list[tuple[Box, str]] = []

    def cut(self, boxes: Sequence[Box], limit: int) -> list[Box] | None:
        """A rule's boxes minus the run's so far; None when they would be too many."""
        return _pieces(self.claimed, boxes, limit)

    def add(self, pieces: Sequence[Box], target: str) -> None:
        for piece in pieces:
            self.claimed.add(piece)
            self.pieces.append((piece, target))

    def maps(self, index: int) -> list[RuleMap]:
        """The run's maps: one keyed with ports for the port protocols, one without
        for the rest. Addresses are in the key only when some rule of the run has
        them: the shorter the key, the cheaper the lookup."""
        fam = self.family
        ip, addr_type, parse = ADDRESS[fam]
        anything = ANY[fam]
        addressed = any(b[1] != anything[1] or b[2] != anything[2] for b, _ in self.pieces)

        def span(iv: Interval, address: bool = False) -> str:
            text = (lambda v: str(parse(v))) if address else str
            return text(iv[0]) if iv[0] == iv[1] else f"{text(iv[0])}-{text(iv[1])}"

        # A piece keeps its protocol span whole in each map it belongs to (the lookup
        # is guarded by protocol): one element, not one per port protocol and per
        # span between them. Fewer elements load faster: the kernel's concatenated
        # interval sets insert in quadratic time.
        ported: list[str] = []
        other: list[str] = []
        for box, target in self.pieces:
            with_ports, without = _protocols(box[0])
            addrs = [span(box[1], True), span(box[2], True)] if addressed else []
            if with_ports:
                ported.append(" . ".join([span(box[0]), *addrs, span(box[3]), span(box[4])])
                              + f" : goto {target}")
            if without:
                other.append(" . ".join([span(box[0]), *addrs]) + f" : goto {target}")
        key = ["meta l4proto", *([f"{ip} saddr", f"{ip} daddr"] if addressed else [])]
        typ = ["inet_proto", *([addr_type, addr_type] if addressed else [])]
        ports_key, ports_type = ["th sport", "th dport"], ["inet_service", "inet_service"]
        out = []
        if ported:
            out.append(RuleMap(f"rules{fam}p_{index}", " . ".join(key + ports_key),
                               " . ".join(typ + ports_type), tuple(ported), f"ipv{fam}", True))
        if other:
            out.append(RuleMap(f"rules{fam}o_{index}", " . ".join(key), " . ".join(typ),
                               tuple(other), f"ipv{fam}", False))
        return out


@dataclass(frozen=True)
class Classify:
    """The [[rule]] part of the classify chain, in order: single rules (text) and
    compiled maps."""

    steps: tuple[tuple[str, str] | RuleMap, ...] = ()  # (match, target) or a map


def compile_rules(rules: Sequence[tuple[Rule, str]], ipv6: bool,
                  limit: int = BOX_LIMIT) -> Classify:
    """`rules`: each [[rule]] with the chain its connections go to, in config order.
    A rule that names interfaces, or whose conditions cut into more than `limit`
    boxes (long address lists times port lists), stays a single nft rule there."""
    families = (4, 6) if ipv6 else (4,)
    boxes = [{f: rule_boxes(rule, f) for f in families} for rule, _ in rules]
    # Index claimed boxes along the dimension where the rules differ most.
    flat = [b for by in boxes for bs in by.values() if bs for b in bs]
    axis = max(range(1, 5), key=lambda i: len({b[i] for b in flat}))
    steps: list[tuple[str, str] | RuleMap] = []
    runs: dict[int, _Run] = {}

    def close() -> None:
        made = [m for f in families if f in runs for m in runs[f].maps(len(steps))]
        steps.extend(made)
        runs.update({f: _Run(f, axis) for f in families})

    def cuts(rule: Rule, by: dict[int, list[Box] | None]) -> dict[int, list[Box]] | None:
        if rule.iif:
            return None
        out: dict[int, list[Box]] = {}
        for f, bs in by.items():
            if bs is None:
                continue
            pieces = runs[f].cut(bs, limit) if len(bs) <= limit else None
            if pieces is None:
                return None
            out[f] = pieces
        return out

    close()
    for (rule, target), by in zip(rules, boxes, strict=True):
        made = cuts(rule, by)
        if made is None and any(run.pieces for run in runs.values()):
            close()  # perhaps it fits in a fresh run
            made = cuts(rule, by)
        if made is None:
            close()
            steps += [(m, target) for m in rule_matches(rule)]
            continue
        for f, pieces in made.items():
            runs[f].add(pieces, target)
    close()
    return Classify(tuple(steps))
