"""Each uplink's id, and where that id lives in the kernel: its mark, its
routing table and its rule priorities.

Ids belong to names, not to positions in the config: an uplink keeps its id
across reloads, reorders, other uplinks coming and going, and restarts (the
daemon and `apply` read the previous assignment back from the kernel). The
id is in the ct mark of every flow the uplink carries, so a flow of an uplink
that stays never moves to another one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nmbalance.config.model import Config, KernelSettings, mark_capacity


@dataclass(frozen=True)
class Layout:
    mask: int
    table_base: int
    priority_base: int

    @property
    def shift(self) -> int:
        return (self.mask & -self.mask).bit_length() - 1

    @property
    def capacity(self) -> int:
        return mark_capacity(self.mask)

    def mark(self, uplink_id: int) -> int:
        return uplink_id << self.shift

    def id_of_mark(self, mark: int) -> int:
        return (mark & self.mask) >> self.shift

    def table(self, uplink_id: int) -> int:
        return self.table_base + uplink_id

    @property
    def suppress_priority(self) -> int:
        return self.priority_base

    def fwmark_priority(self, uplink_id: int) -> int:
        return self.priority_base + uplink_id

    def source_priority(self, uplink_id: int) -> int:
        return self.priority_base + 255 + uplink_id


def layout_of(config: Config) -> Layout:
    return kernel_layout(config.kernel)


def kernel_layout(k: KernelSettings) -> Layout:
    """The layout of these kernel settings (the defaults' when there is no config)."""
    return Layout(k.mark_mask, k.route_table_base, k.rule_priority_base)


def assign(names: Sequence[str], previous: Mapping[str, int], capacity: int) -> dict[str, int]:
    """Ids 1..capacity for `names`: a name keeps its previous id; a new one takes
    the lowest free id, preferring ids no previous uplink had (flows of a
    removed uplink may still carry its id in their ct mark)."""
    out: dict[str, int] = {}
    for name in names:
        old = previous.get(name)
        if old is not None and 1 <= old <= capacity and old not in out.values():
            out[name] = old
    retired = set(previous.values())
    free = sorted((i for i in range(1, capacity + 1) if i not in out.values()),
                  key=lambda i: (i in retired, i))
    for name in names:
        if name not in out:
            if not free:
                raise ValueError(f"{len(names)} uplinks do not fit in {capacity} ids")
            out[name] = free.pop(0)
    return {name: out[name] for name in names}


def ids_in_kernel(restore: Mapping[int, str], chains: Mapping[str, str], layout: Layout
                  ) -> dict[str, int]:
    """The assignment our table holds: its restore map (mark -> chain) read back,
    and `chains` (each configured uplink's restore chain -> its name)."""
    found: dict[str, int] = {}
    for mark, chain in sorted(restore.items()):
        name = chains.get(chain)
        if name is not None and name not in found:
            found[name] = layout.id_of_mark(mark)
    return found
