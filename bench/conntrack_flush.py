"""Conntrack flush by mark: what a health change with `flush_conntrack` costs.

Run as root: in a namespace of its own, fills conntrack with 10,000 UDP
entries of which 1,000 carry the dead uplink's mark, then times dropping those
1,000 (one kernel-side flush by mark and mask) with nmbalance's own raw
ctnetlink socket, against the same request through pyroute2's synchronous
Conntrack wrapper (what nmbalance used before) as the baseline, in interleaved
pairs. Prints each one's median, the median of the pairwise ratios with its
range, and an A/A pair (ours against ours) for the noise floor. Then a whole
health change with as many entries: the apply that waits for the drop (the
one-shot CLI's) against the daemon's, which drops them in the background.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.netns import rerun_inside, uplinks_batch  # noqa: E402

TOTAL, DEAD, PAIRS = 10_000, 1_000, 9
LIVE_MARK, DEAD_MARK, MASK = 0x100, 0x200, 0xFF00


def fill(ct: object, first: int, count: int, mark: int) -> None:
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    for i in range(first, first + count):
        src, dst = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "198.51.100.53"
        ct.entry("add", timeout=600, mark=mark,  # type: ignore[attr-defined]
                 tuple_orig=NFCTAttrTuple(saddr=src, daddr=dst, proto=17, sport=40000,
                                          dport=53),
                 tuple_reply=NFCTAttrTuple(saddr=dst, daddr=src, proto=17, sport=53,
                                           dport=40000))


def count() -> int:
    out = subprocess.run(["conntrack", "-C"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def inside() -> None:
    from pyroute2 import Conntrack

    from nmbalance.dataplane.conntrack import ConntrackCleaner

    ct = Conntrack()
    ours = ConntrackCleaner()
    fill(ct, 0, TOTAL - DEAD, LIVE_MARK)
    methods: dict[str, Callable[[], object]] = {
        "ours": lambda: ours.drop_marked({DEAD_MARK}, MASK),
        "pyroute2": lambda: ct.flush(mark=DEAD_MARK, mark_mask=MASK),
    }

    def timed(name: str) -> float:
        fill(ct, TOTAL - DEAD, DEAD, DEAD_MARK)
        assert count() == TOTAL
        start = time.perf_counter()
        methods[name]()
        elapsed = (time.perf_counter() - start) * 1000
        assert count() == TOTAL - DEAD, "the flush left marked entries, or took others"
        return elapsed

    ms: dict[str, list[float]] = {"ours": [], "pyroute2": [], "ours (A/A)": []}
    ratios: dict[str, list[float]] = {"ours / pyroute2": [], "ours / ours (A/A)": []}
    for i in range(PAIRS):
        first, second = ("ours", "pyroute2") if i % 2 else ("pyroute2", "ours")
        a = {first: timed(first), second: timed(second)}
        again = timed("ours")
        ms["ours"].append(a["ours"])
        ms["pyroute2"].append(a["pyroute2"])
        ms["ours (A/A)"].append(again)
        ratios["ours / pyroute2"].append(a["ours"] / a["pyroute2"])
        ratios["ours / ours (A/A)"].append(again / a["ours"])
    print(f"conntrack flush of {DEAD:,} marked entries among {TOTAL:,} ({PAIRS} interleaved "
          "pairs, ms)")
    for name, values in ms.items():
        print(f"  {name:<12} median {statistics.median(values):6.2f}  "
              f"range {min(values):6.2f}-{max(values):6.2f}")
    for name, values in ratios.items():
        print(f"  {name:<18} median ratio {statistics.median(values):5.3f}  "
              f"range {min(values):5.3f}-{max(values):5.3f}")
    ours.close()
    health_change(ct)
    ct.close()


def health_change(ct: object) -> None:
    """A whole health change (ISP2 down) with 1,000 of its entries among 10,000:
    the one-shot CLI's apply, which drops them before it returns, against the
    daemon's, which returns once new connections follow the plan and drops them
    in a thread of its own. Interleaved pairs; the entries are refilled between."""
    from dataclasses import replace

    from pyroute2 import IPRoute

    from bench.apply_time import config_text
    from nmbalance.config import load_config_text
    from nmbalance.core.decide import decide
    from nmbalance.core.facts import Health
    from nmbalance.dataplane.apply import Applier, flush
    from nmbalance.sources.kernel_facts import snapshot

    ipr = IPRoute(strict_check=True)
    config = load_config_text(config_text(2, "weighted"))
    facts = snapshot(ipr, config)
    down = replace(facts, uplinks=(facts.uplinks[0], replace(facts.uplinks[1],
                                                              health=Health.DOWN)))
    up_plan, down_plan = decide(config, facts), decide(config, down)
    dead = up_plan.uplinks[1].mark
    assert (dead, up_plan.uplinks[0].mark) == (DEAD_MARK, LIVE_MARK)
    appliers = {"waits for the drop": Applier(ipr),
                "drops in background": Applier(ipr, flush_in_background=True)}
    ms: dict[str, list[float]] = {name: [] for name in appliers}
    for i in range(PAIRS):
        for name in sorted(appliers, reverse=bool(i % 2)):
            applier = appliers[name]
            applier.apply(up_plan)
            fill(ct, TOTAL - DEAD, DEAD, dead)
            start = time.perf_counter()
            report = applier.apply(down_plan)
            ms[name].append((time.perf_counter() - start) * 1000)
            if report.conntrack_done is not None:
                report.conntrack_done.result()
            assert count() == TOTAL - DEAD, "the dead uplink's entries were not all dropped"
    print(f"health change, {DEAD:,} of the dead uplink's entries among {TOTAL:,} "
          f"({PAIRS} interleaved pairs, ms until apply returns)")
    for name, values in ms.items():
        print(f"  {name:<20} median {statistics.median(values):6.2f}  "
              f"range {min(values):6.2f}-{max(values):6.2f}")
    ratios = [b / a for a, b in zip(*ms.values(), strict=True)]
    print(f"  background / waiting  median ratio {statistics.median(ratios):5.3f}  "
          f"range {min(ratios):5.3f}-{max(ratios):5.3f}")
    for applier in appliers.values():
        applier.close()
    flush(ipr, "nmbalance", 211)


def main() -> None:
    if sys.argv[1:] == ["--inside"]:
        inside()
        return
    rerun_inside(__file__, f"nmbb{os.getpid() % 10000}ct", uplinks_batch(2))


if __name__ == "__main__":
    main()
