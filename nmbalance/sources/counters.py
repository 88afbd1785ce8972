"""Per-link byte counters, for the load of the capacity methods.

/proc/self/net/dev shows the counters of the reading process's network
namespace, as 64-bit numbers, and reads in microseconds: a netlink link dump
parsed by pyroute2 costs ~4 ms, which at two samples a second was most of an
idle daemon's CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

NET_DEV = Path("/proc/self/net/dev")


class LinkStats(NamedTuple):
    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


def read_link_stats(path: Path = NET_DEV) -> dict[str, LinkStats]:
    """Bytes and packets each way, by interface name."""
    out = {}
    for line in path.read_text().splitlines()[2:]:  # two header lines
        name, _, fields = line.partition(":")
        values = fields.split()
        if len(values) >= 10:
            out[name.strip()] = LinkStats(int(values[0]), int(values[1]), int(values[8]),
                                          int(values[9]))
    return out


def read_counters(path: Path = NET_DEV) -> dict[str, tuple[int, int]]:
    """(rx bytes, tx bytes) by interface name."""
    return {name: (s.rx_bytes, s.tx_bytes) for name, s in read_link_stats(path).items()}
