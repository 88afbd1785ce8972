"""The in-place change of structure, read as text: what it empties, deletes and
makes, in an order the kernel takes (the lab proves the kernel's result equals
a whole replace: tests/lab/test_inplace.py)."""

from __future__ import annotations

from nmbalance.core.decide import decide
from nmbalance.core.plan import Plan
from nmbalance.core.restructure import blocks, restructure
from tests.unit.test_decide import CONFIG, config, facts, uplink


def _plan(text: str = CONFIG, ups: int = 3) -> Plan:
    return decide(config(text), facts(*(uplink(n) for n in range(1, ups + 1))))


def _lines(old: Plan, new: Plan) -> list[str]:
    made = restructure("nmbalance", (old.nft.structure, old.nft.contents_text),
                       (new.nft.structure, new.nft.contents_text))
    assert made is not None
    return made.text.splitlines()


def test_blocks_are_every_object_of_a_rendering_once() -> None:
    found = blocks(_plan().nft.structure)
    assert found is not None
    assert ("chain", "classify") in found and ("map", "w_default") in found
    assert ("counter", "new_ISP1") in found and ("set", "live") in found
    assert found[("chain", "up_ISP2")].startswith("  chain up_ISP2 {")
    assert found[("chain", "up_ISP2")].endswith("  }")
    # Anything else than our own rendering is not taken apart.
    assert blocks("table inet nmbalance {\n  flowtable f { }\n}\n") is None
    assert blocks("table inet nmbalance {\n  chain x {\n") is None


def test_nothing_changed_sends_nothing() -> None:
    plan = _plan()
    assert _lines(plan, plan) == []


def test_a_new_method_changes_its_chains_and_adds_its_sets() -> None:
    weighted = _plan()
    sticky = _plan(CONFIG.replace('mode = "weighted"', 'mode = "persistence"'))
    lines = _lines(weighted, sticky)
    assert "flush chain inet nmbalance pick_default" in lines
    assert not any(line.startswith("delete set") for line in lines)
    made = lines.index("table inet nmbalance {")
    assert any(line.startswith("  set st_default__ISP1 {") for line in lines[made:])
    # The old digest chain goes, the new one comes.
    assert any(line.startswith("delete chain inet nmbalance structure_") for line in lines)
    assert any(line.startswith("  chain structure_") for line in lines[made:])
    # Unchanged per-uplink chains are not touched.
    assert not any("up_ISP1" in line for line in lines[:made])


def test_an_uplink_gone_empties_the_maps_that_name_it_before_its_chains_go() -> None:
    three, two = _plan(), _plan(CONFIG.split("[[uplink]]\nname = \"ISP3\"")[0] + """
[[lan]]
name = "LAN"
interface = "lan0"
""", ups=2)
    lines = _lines(three, two)
    flush = lines.index("flush map inet nmbalance w_default")
    gone = lines.index("delete chain inet nmbalance up_ISP3")
    assert flush < gone
    assert lines.index("delete counter inet nmbalance new_ISP3") < gone
    # ... and fills them again after.
    assert any(line.startswith("add element inet nmbalance w_default") for line in lines[gone:])


def test_a_set_made_again_takes_the_chains_that_use_it_along() -> None:
    sticky = CONFIG.replace('mode = "weighted"', 'mode = "persistence"')
    before = _plan(sticky)
    after = _plan(sticky.replace('mode = "persistence"\n',
                                 'mode = "persistence"\npersistence_timeout = 60\n'))
    lines = _lines(before, after)
    deleted = lines.index("delete set inet nmbalance st_default__ISP1")
    assert lines.index("flush chain inet nmbalance pick_default") < deleted
    assert "  chain pick_default {" in lines[deleted:]
