"""`nmbalance connections`: the kernel's connection tracking, grouped by the
uplink each flow's ct mark names, with the busiest hosts of each."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from socket import IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP
from typing import Any

from nmbalance.config.model import KernelSettings
from nmbalance.core.numbering import kernel_layout

TOP = 5
PROTOCOLS = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_SCTP: "sctp"}


@dataclass(frozen=True)
class Flow:
    mark: int
    src: str
    dst: str
    proto: str
    dport: int | None
    translated: bool  # the reply comes back to another address: NAT (masquerade)


def read_flows() -> list[Flow]:
    """Every IPv4 conntrack entry (needs CAP_NET_ADMIN)."""
    from pyroute2 import Conntrack

    out = []
    with Conntrack() as ct:
        for e in ct.dump_entries():
            orig, reply = e.tuple_orig, e.tuple_reply
            out.append(Flow(int(e.mark or 0), str(orig.saddr), str(orig.daddr),
                            PROTOCOLS.get(orig.proto, str(orig.proto)),
                            int(orig.dport) if orig.dport else None,
                            str(reply.daddr) != str(orig.saddr)))
    return out


def grouped(flows: Iterable[Flow], marks: Mapping[str, int], kernel: KernelSettings
            ) -> dict[str, Any]:
    """Flows per uplink (by `marks`, name -> mark) and the rest as unmarked."""
    layout = kernel_layout(kernel)
    by_id = {layout.id_of_mark(mark): name for name, mark in marks.items()}
    per: dict[str, list[Flow]] = {name: [] for name in marks}
    other = 0
    for f in flows:
        name = by_id.get(layout.id_of_mark(f.mark)) if f.mark & layout.mask else None
        if name is None:
            other += 1
        else:
            per[name].append(f)
    total = sum(len(v) for v in per.values())
    uplinks = []
    for name, items in per.items():
        uplinks.append({
            "name": name, "mark": marks[name], "connections": len(items),
            "share": len(items) / total if total else 0.0,
            "by_protocol": dict(Counter(f.proto for f in items).most_common()),
            "top_sources": [{"address": a, "connections": n}
                            for a, n in Counter(f.src for f in items).most_common(TOP)],
            "top_destinations": [{"address": a, "connections": n}
                                 for a, n in Counter(f.dst for f in items).most_common(TOP)],
        })
    return {"version": 1, "uplinks": uplinks, "other": other}


def render(report: dict[str, Any]) -> str:
    lines = [f"{'UPLINK':<12} {'FLOWS':>7} {'SHARE':>6}  PROTOCOLS"]
    for u in report["uplinks"]:
        protos = " ".join(f"{p} {n}" for p, n in u["by_protocol"].items()) or "-"
        lines.append(f"{u['name']:<12} {u['connections']:>7} {u['share']:>6.1%}  {protos}")
        for label, key in (("from", "top_sources"), ("to", "top_destinations")):
            if u[key]:
                lines.append(f"{'':<12} {label} " + ", ".join(
                    f"{t['address']} ({t['connections']})" for t in u[key]))
    lines.append(f"{report['other']} other flows (not through an uplink of ours: local, "
                 "LAN to LAN, never balanced, or older than our table)")
    return "\n".join(lines) + "\n"
