"""Weights to slot intervals of the `numgen random mod SLOTS` weight map.

Largest-remainder rounding, contiguous intervals in uplink order: the
intervals never overlap, never leave a gap, and always add up to SLOTS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SLOTS = 1000


@dataclass(frozen=True)
class SlotRange:
    name: str
    first: int
    last: int  # inclusive

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def allocate(weights: Sequence[tuple[str, float]], slots: int = SLOTS) -> list[SlotRange]:
    """Split `slots` over the names in proportion to their (non-negative) weights.
    Every positive weight gets at least one slot: an uplink in rotation always
    takes some new connections, however small its weight beside the others."""
    live = [(name, weight) for name, weight in weights if weight > 0]
    total = sum(weight for _, weight in live)
    if total == 0:
        return []
    exact = [(name, weight * slots / total) for name, weight in live]
    sizes = {name: max(int(share), 1) for name, share in exact}
    missing = slots - sum(sizes.values())
    if missing >= 0:
        # Hand the remaining slots to the largest fractional parts; ties go to the
        # earlier uplink so the result depends only on the inputs.
        order = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] - int(exact[i][1])), i))
        for i in order[:missing]:
            sizes[exact[i][0]] += 1
    else:
        # Minimum slots taken from the largest shares, one at a time.
        for _ in range(-missing):
            biggest = max(sizes, key=lambda n: (sizes[n], -list(sizes).index(n)))
            sizes[biggest] -= 1
    ranges: list[SlotRange] = []
    first = 0
    for name, _ in live:
        size = sizes[name]
        ranges.append(SlotRange(name, first, first + size - 1))
        first += size
    return ranges
