import itertools

import pytest

from nmbalance.core.slots import SLOTS, allocate


@pytest.mark.parametrize("weights", [
    [1], [1, 1], [1, 3, 2], [1, 1, 1], [7, 11, 13, 17], [1000, 1, 1], list(range(1, 65)),
    [3, 0, 5], [1] * 64,
])
def test_ranges_cover_every_slot_once(weights: list[int]) -> None:
    names = [f"u{i}" for i in range(len(weights))]
    ranges = allocate(list(zip(names, weights, strict=True)))
    covered = [s for r in ranges for s in range(r.first, r.last + 1)]
    assert covered == list(range(SLOTS))  # contiguous, no gap, no overlap
    total = sum(weights)
    for r in ranges:
        weight = weights[names.index(r.name)]
        # Largest remainder, off by < 1; a share under one slot still gets one (taken
        # from the largest), so those two are off by at most the few slots handed out.
        assert abs(r.size - weight * SLOTS / total) < 1 + sum(
            1 for w in weights if 0 < w * SLOTS / total < 1)
        assert r.size >= 1
    assert {r.name for r in ranges} == {n for n, w in zip(names, weights, strict=True) if w > 0}


def test_no_weight_no_ranges() -> None:
    assert allocate([("a", 0), ("b", 0)]) == []
    assert allocate([]) == []


def test_deterministic_tie_break() -> None:
    for perm in itertools.permutations(["a", "b", "c"]):
        ranges = allocate([(n, 1) for n in perm])
        assert [r.size for r in ranges] == [334, 333, 333]
        assert ranges[0].name == perm[0]


def test_a_tiny_weight_beside_huge_ones_still_gets_a_slot() -> None:
    ranges = allocate([("a", 1000), ("b", 1000), ("c", 1)])
    assert [r.size for r in ranges] == [500, 499, 1]
