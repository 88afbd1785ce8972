"""Uplink ids belong to names: reorder, add, remove and restart keep them."""

from __future__ import annotations

import pytest

from nmbalance.core.numbering import Layout, assign, ids_in_kernel
from nmbalance.core.ruleset import ident, restore_chain, rule_group, sticky_set


def test_new_uplinks_take_ids_in_order() -> None:
    assert assign(["A", "B", "C"], {}, 255) == {"A": 1, "B": 2, "C": 3}


def test_a_reorder_keeps_every_id() -> None:
    first = assign(["A", "B", "C"], {}, 255)
    assert assign(["C", "A", "B"], first, 255) == first


def test_a_new_uplink_does_not_reuse_a_removed_ones_id_while_others_are_free() -> None:
    first = assign(["A", "B", "C"], {}, 255)
    after = assign(["A", "C", "D"], first, 255)
    assert after["A"] == 1 and after["C"] == 3
    assert after["D"] == 4  # 2 was B's: its flows may still carry it in their ct mark


def test_when_the_mask_is_full_a_retired_id_is_taken() -> None:
    assert assign(["A", "C", "D"], {"A": 1, "B": 2, "C": 3}, 3) == {"A": 1, "C": 3, "D": 2}
    with pytest.raises(ValueError, match="do not fit"):
        assign(["A", "B", "C", "D"], {}, 3)


def test_ids_out_of_range_or_doubled_are_reassigned() -> None:
    assert assign(["A", "B"], {"A": 300, "B": 2}, 255) == {"A": 1, "B": 2}
    assert assign(["A", "B"], {"A": 2, "B": 2}, 255) == {"A": 2, "B": 1}


def test_ids_read_back_from_the_restore_map() -> None:
    layout = Layout(0xFF00, 7700, 7700)
    chains = {restore_chain(ident(n)): n for n in ("DSL", "LTE", "a.b")}
    restore = {0x300: "rs_DSL", 0x100: "rs_a_2eb", 0x200: "rs_gone"}
    assert ids_in_kernel(restore, chains, layout) == {"DSL": 3, "a.b": 1}
    assert (layout.mark(3), layout.table(3), layout.fwmark_priority(3),
            layout.source_priority(3)) == (0x300, 7703, 7703, 7958)


def test_identifiers_are_one_to_one() -> None:
    names = ["u2_a_b", "a_b", "a.b", "a-b", "ab", "A_b"]
    assert len({ident(n) for n in names}) == len(names)
    assert all("__" not in ident(n) and not ident(n).endswith("_") for n in names)
    # Joined by "__", a rule's group and an uplink never collide with another pair.
    pairs = [(rule_group(g), ident(u)) for g in ("a", "a.", "x_") for u in ("2e-z", "2dz", "b")]
    assert len({sticky_set(g, u) for g, u in pairs}) == len(pairs)
