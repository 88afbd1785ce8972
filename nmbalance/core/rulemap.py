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
from collections.abc import Iterable, Iterator, Sequence
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
# Elements per map before it is split into buckets: the kernel's concatenated
# interval sets insert in quadratic time (16,000 elements in one map load in
# about 6 s, in maps of 128 in 0.6 s), single-field ones do not.
BUCKET = 128


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

    def overlapping(self, b: Box) -> Iterator[Box]:
        """The claimed boxes `b` meets, the wide ones first: a box that one of them
        covers whole (a rule that repeats an earlier one) is done with at once,
        without a walk through every narrow box along its span."""
        lo, hi = b[self.axis]
        first = bisect.bisect_left(self.starts, lo - self.longest)
        last = bisect.bisect_right(self.starts, hi)
        narrow = (self.boxes[i] for i in range(first, last))  # no copy of the slice
        return (c for c in itertools.chain(self.wide, narrow) if _meets(b, c))

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
            if not pieces:
                break
        out += pieces
    return out


def _protocols(iv: Interval) -> tuple[bool, bool]:
    """Whether a protocol span holds a port protocol, and whether it holds another."""
    ported = sum(iv[0] <= p <= iv[1] for p in PORTED)
    return ported > 0, iv[1] - iv[0] + 1 > ported


@dataclass(frozen=True)
class RuleMap:
    """One verdict map of a compiled run of rules: its name, key, type and elements.

    A map of more than `BUCKET` elements is split along one field of its key:
    `index` maps spans of that field to `buckets`, each a small map (and a chain
    of the same name) holding the pieces within its span. Its own `elements` are
    then the pieces too wide for a bucket. Pieces are disjoint, so the order of
    the lookups does not matter."""

    name: str
    key: str
    type: str
    elements: tuple[str, ...]
    family: str  # "ipv4" or "ipv6": the nfproto it is looked up for
    # Looked up for the port protocols only (its key has their ports), for the others
    # only, or (None) for every protocol (its key has no ports).
    ported: bool | None
    index: RuleMap | None = None
    buckets: tuple[RuleMap, ...] = ()

    @property
    def after(self) -> str:
        """The chain a bucketed map's lookups continue in when they miss."""
        return f"{self.name}_next"


Piece = tuple[Box, str]  # a disjoint box and the chain its connections go to


def _buckets(pieces: Sequence[Piece], axis: int, whole: Interval, size: int
             ) -> tuple[list[Piece], list[tuple[Interval, list[Piece]]]]:
    """`pieces` split along `axis` into consecutive spans of about `size` pieces,
    which cover the `whole` axis: a piece that crosses one boundary is cut in two;
    one that crosses more stays in the first list (the wide ones)."""
    axis_lo, axis_hi = whole
    starts = sorted(box[axis][0] for box, _ in pieces)
    bounds = sorted({axis_lo, *starts[size::size]})
    wide: list[Piece] = []
    held: list[list[Piece]] = [[] for _ in bounds]
    for box, target in pieces:
        lo, hi = box[axis]
        first = bisect.bisect_right(bounds, lo) - 1
        last = bisect.bisect_right(bounds, hi) - 1
        if last - first > 1:
            wide.append((box, target))
            continue
        for k in range(first, last + 1):
            end = bounds[k + 1] - 1 if k + 1 < len(bounds) else axis_hi
            cut = (max(lo, bounds[k]), min(hi, end))
            held[k].append(((*box[:axis], cut, *box[axis + 1:]), target))
    spans = [(b, bounds[k + 1] - 1 if k + 1 < len(bounds) else axis_hi)
             for k, b in enumerate(bounds)]
    return wide, [(span, h) for span, h in zip(spans, held, strict=True) if h]


class _Run:
    """Consecutive map-able rules of one family, compiled as they come."""

    def __init__(self, family: int, axis: int) -> None:
        self.family = family
        self.claimed = _Claimed(axis, ANY[family][axis][1])
        self.pieces: list[Piece] = []

    def cut(self, boxes: Sequence[Box], limit: int) -> list[Box] | None:
        """A rule's boxes minus the run's so far; None when they would be too many."""
        return _pieces(self.claimed, boxes, limit)

    def add(self, pieces: Sequence[Box], target: str) -> None:
        for piece in pieces:
            self.claimed.add(piece)
            self.pieces.append((piece, target))

    def maps(self, index: int, bucket: int) -> list[RuleMap]:
        """The run's maps. A field is in the key only when some rule of the run
        narrows it: the shorter the key, the cheaper the lookup. With ports in it,
        one map keyed with them for the port protocols and one without for the
        rest; else one map for all. A map of more than `bucket` elements is split
        into buckets of about that many."""
        if not self.pieces:
            return []
        fam = self.family
        ip, addr_type, parse = ADDRESS[fam]
        anything = ANY[fam]
        # Pieces are disjoint, and the same in a field left out: still disjoint without it.
        used = [d for d in (1, 2, 3, 4) if any(b[d] != anything[d] for b, _ in self.pieces)]
        fields = {1: (f"{ip} saddr", addr_type), 2: (f"{ip} daddr", addr_type),
                  3: ("th sport", "inet_service"), 4: ("th dport", "inet_service")}

        written: dict[tuple[Interval, bool], str] = {}  # the same spans recur a lot

        def span(iv: Interval, address: bool = False) -> str:
            if (iv, address) not in written:
                text = (lambda v: str(parse(v))) if address else str
                written[iv, address] = text(iv[0]) if iv[0] == iv[1] else \
                    f"{text(iv[0])}-{text(iv[1])}"
            return written[iv, address]

        def make(name: str, dims: list[int], pieces: Sequence[Piece], ported: bool | None
                 ) -> RuleMap:
            def element(box: Box, target: str) -> str:
                return " . ".join([span(box[0]), *(span(box[d], d in (1, 2)) for d in dims)]) \
                    + f" : goto {target}"
            key = " . ".join(["meta l4proto", *(fields[d][0] for d in dims)])
            typ = " . ".join(["inet_proto", *(fields[d][1] for d in dims)])
            if len(pieces) <= bucket or not dims:
                return RuleMap(name, key, typ, tuple(element(*p) for p in pieces),
                               f"ipv{fam}", ported)
            axis = max(dims, key=lambda d: len({box[d] for box, _ in pieces}))
            wide, held = _buckets(pieces, axis, anything[axis], bucket)
            buckets = tuple(RuleMap(f"{name}_{k}", key, typ, tuple(element(*p) for p in ps),
                                    f"ipv{fam}", ported) for k, (_, ps) in enumerate(held))
            lookup = RuleMap(f"{name}_idx", fields[axis][0], fields[axis][1],
                             tuple(f"{span(iv, axis in (1, 2))} : goto {b.name}"
                                   for (iv, _), b in zip(held, buckets, strict=True)),
                             f"ipv{fam}", ported)
            return RuleMap(name, key, typ, tuple(element(*p) for p in wide), f"ipv{fam}",
                           ported, lookup, buckets)

        # A piece keeps its protocol span whole in each map it belongs to (the lookup
        # is guarded by protocol): one element, not one per port protocol and per
        # span between them. Fewer elements load faster: the kernel's concatenated
        # interval sets insert in quadratic time.
        addrs = [d for d in used if d in (1, 2)]
        if 3 not in used and 4 not in used:
            return [make(f"rules{fam}_{index}", addrs, self.pieces, None)]
        ported = [p for p in self.pieces if _protocols(p[0][0])[0]]
        other = [p for p in self.pieces if _protocols(p[0][0])[1]]
        out = []
        if ported:
            out.append(make(f"rules{fam}p_{index}", used, ported, True))
        if other:
            out.append(make(f"rules{fam}o_{index}", addrs, other, False))
        return out


@dataclass(frozen=True)
class Classify:
    """The [[rule]] part of the classify chain, in order: single rules (text) and
    compiled maps."""

    steps: tuple[tuple[str, str] | RuleMap, ...] = ()  # (match, target) or a map


def compile_rules(rules: Sequence[tuple[Rule, str]], ipv6: bool,
                  limit: int = BOX_LIMIT, bucket: int = BUCKET) -> Classify:
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
        made = [m for f in families if f in runs for m in runs[f].maps(len(steps), bucket)]
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
