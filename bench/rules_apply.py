"""Apply time against the number of [[rule]]s: 100, 1000 and 5000 (in-process,
two uplinks, median of 5 runs each).

Run as root: in a namespace of its own, for each count, times
  - load: the TOML read and validated
  - decide: the plan, rules compiled into maps (core.rulemap)
  - first apply: the table made and filled
  - reapply: the same plan again (nothing to change)
  - rule added: one rule more (the structure changed), in place: the daemon's way
  - replaced whole: the same by a whole-table replace
  - flush: everything removed
and the number of map elements the rules compiled into,
and prints each with its ratio to the 1000-rule figure (linear growth: 5.0 at
5000). The rules are a mix: per-destination /24s, some by source too, some
TCP ports, and a UDP port rule every 50 (a wide one that cuts the others).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.netns import rerun_inside, uplinks_batch  # noqa: E402

COUNTS = (100, 1000, 5000)
RUNS = 5
HEAD = """mode = "weighted"
snippets_dir = ""
[[uplink]]
name = "ISP1"
interface = "wan1"
gateway = "10.1.0.1"
[[uplink]]
name = "ISP2"
interface = "wan2"
gateway = "10.2.0.1"
[[lan]]
name = "LAN"
interface = "lan0"
"""


def rule(i: int) -> str:
    text = f'[[rule]]\nname = "r{i}"\nmethod = "enforced"\nuplinks = ["ISP{1 + i % 2}"]\n'
    if i % 50 == 0:
        return text + 'proto = "udp"\ndport = [53]\n'
    text += f'dst = ["10.{100 + i // 256}.{i % 256}.0/24"]\n'
    if i % 5 == 0:
        text += f'src = ["192.168.{i % 256}.0/24"]\n'
    if i % 3 == 0:
        text += f'proto = "tcp"\ndport = [{443 + i % 7}]\n'
    return text


def median_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def inside() -> None:
    from pyroute2 import IPRoute

    from nmbalance.config import load_config_text
    from nmbalance.core.decide import decide
    from nmbalance.dataplane.apply import Applier, flush
    from nmbalance.sources.kernel_facts import snapshot

    ipr = IPRoute(strict_check=True)
    rows: dict[int, dict[str, float]] = {}
    for n in COUNTS:
        text = HEAD + "".join(rule(i) for i in range(n))
        more = text + rule(n + 1)  # not a UDP one, which r0 would shadow
        config = load_config_text(text)
        other = load_config_text(more)
        facts = snapshot(ipr, config)
        plans = [decide(config, facts), decide(other, facts)]
        row = {"load": median_ms(lambda: load_config_text(text)),  # noqa: B023
               "decide": median_ms(lambda: decide(config, facts))}  # noqa: B023

        firsts = []
        for _ in range(RUNS):
            flush(ipr, "nmbalance", 211)
            start = time.perf_counter()
            Applier(ipr).apply(plans[0])
            firsts.append((time.perf_counter() - start) * 1000)
        row["first apply"] = statistics.median(firsts)
        applier = Applier(ipr)
        applier.apply(plans[0])
        row["reapply"] = median_ms(lambda: applier.apply(plans[0]))  # noqa: B023
        flip = {"i": 0}

        def replace(whole: bool) -> None:
            flip["i"] += 1  # noqa: B023
            if whole:
                applier.replace_next()  # noqa: B023
            applier.apply(plans[flip["i"] % 2])  # noqa: B023

        row["rule added"] = median_ms(lambda: replace(False))
        row["replaced whole"] = median_ms(lambda: replace(True))

        flushes = []
        for _ in range(RUNS):
            Applier(ipr).apply(plans[0])
            start = time.perf_counter()
            flush(ipr, "nmbalance", 211)
            flushes.append((time.perf_counter() - start) * 1000)
        row["flush"] = statistics.median(flushes)
        elements = sum(len(m.elements) + sum(len(b.elements) for b in m.buckets)
                       for m in plans[0].nft.spec.rules.steps if not isinstance(m, tuple))
        row["map elements"] = float(elements)
        flush(ipr, "nmbalance", 211)
        rows[n] = row
    print(f"apply time against [[rule]]s, in-process, 2 uplinks, median of {RUNS} (ms; "
          "x: against 1000 rules)")
    print(f"  {'':<12}" + "".join(f"{n:>16,}" for n in COUNTS))
    for step in rows[COUNTS[0]]:
        cells = "".join(f"{rows[n][step]:>9.1f} x{rows[n][step] / rows[1000][step]:<5.2f}"
                        for n in COUNTS)
        if step == "map elements":
            cells = "".join(f"{rows[n][step]:>9.0f} x{rows[n][step] / rows[1000][step]:<5.2f}"
                            for n in COUNTS)
        print(f"  {step:<12}{cells}")


def main() -> None:
    if sys.argv[1:] == ["--inside"]:
        inside()
        return
    rerun_inside(__file__, f"nmbb{os.getpid() % 10000}r", uplinks_batch(2))


if __name__ == "__main__":
    main()
