"""Apply time for 2, 8, 32 and 64 uplinks, in-process, median of 25 runs.

Run as root: builds its own namespace with N veth uplinks, times
  - decide(): config + facts -> Plan
  - apply, contents only (an uplink goes down and comes back: maps change)
  - apply, shares only (what the measured methods retune: one weight map)
  - apply, the structure changed (weighted <-> persistence), in place
  - apply, the same, by a whole-table replace (what a fresh applier does)
and, as the baseline measured in the same run, the same plan applied the way
a shell script does it: `nft -f` plus one `ip` command per route and rule.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.netns import rerun_inside, uplinks_batch  # noqa: E402

RUNS = 25


def config_text(n: int, mode: str) -> str:
    out = [f'mode = "{mode}"', 'snippets_dir = ""']
    for i in range(1, n + 1):
        out += ["[[uplink]]", f'name = "ISP{i}"', f'interface = "wan{i}"', f"weight = {i % 5 + 1}",
                f'gateway = "10.{i}.0.1"']
    out += ["[[lan]]", 'name = "LAN"', 'interface = "lan0"']
    return "\n".join(out) + "\n"


def median_ms(fn: object, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def inside(n: int) -> None:
    from pyroute2 import IPRoute

    from nmbalance.config import load_config_text
    from nmbalance.core.decide import decide
    from nmbalance.core.facts import Health
    from nmbalance.dataplane.apply import Applier, flush
    from nmbalance.sources.kernel_facts import snapshot

    ipr = IPRoute(strict_check=True)
    weighted = load_config_text(config_text(n, "weighted"))
    sticky = load_config_text(config_text(n, "persistence"))
    facts = snapshot(ipr, weighted)
    down = replace(facts, uplinks=(replace(facts.uplinks[0], health=Health.DOWN),
                                   *facts.uplinks[1:]))
    plans = [decide(weighted, facts), decide(weighted, down)]
    full = [decide(weighted, facts), decide(sticky, facts)]
    applier = Applier(ipr)
    applier.apply(plans[0])
    decide_ms = median_ms(lambda: decide(weighted, facts))
    state = {"i": 0}

    def flip(pair: list[object]) -> None:
        state["i"] += 1
        applier.apply(pair[state["i"] % 2])  # type: ignore[arg-type]

    contents_ms = median_ms(lambda: flip(plans))  # type: ignore[arg-type]
    names = [u.name for u in weighted.uplink]
    retunes = [decide(weighted, facts, measured={"default": {names[0]: 2.0, names[1]: 1.0}}),
               decide(weighted, facts, measured={"default": {names[0]: 1.0, names[1]: 2.0}})]
    applier.apply(retunes[0])
    retune_ms = median_ms(lambda: flip(retunes))  # type: ignore[arg-type]
    applier.apply(plans[0])
    applier.flush_conntrack = False
    no_ct_ms = median_ms(lambda: flip(plans))  # type: ignore[arg-type]
    applier.flush_conntrack = True
    in_place_ms = median_ms(lambda: flip(full))  # type: ignore[arg-type]

    def flip_whole(pair: list[object]) -> None:
        applier.replace_next()
        flip(pair)

    full_ms = median_ms(lambda: flip_whole(full))  # type: ignore[arg-type]

    def flip_oneshot(pair: list[object]) -> None:
        """What `nmbalance apply` does: a fresh socket and applier, everything read back."""
        state["i"] += 1
        with IPRoute(strict_check=True) as fresh:
            once = Applier(fresh)
            once.apply(pair[state["i"] % 2])  # type: ignore[arg-type]
            once.close()

    oneshot_ms = median_ms(lambda: flip_oneshot(plans), runs=10)

    flush(ipr, "nmbalance", 211)

    plan = plans[0]
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
        f.write(plan.nft.full_transaction())
    commands = [["nft", "-f", f.name]]
    commands += [["ip", "route", "replace", r.dst, *(["via", r.gateway] if r.gateway else []),
                  "dev", str(r.interface), "table", str(r.table), "proto", "211"]
                 for r in plan.routes]
    for r in plan.rules:
        sel = ["fwmark", f"{r.fwmark:#x}/{r.fwmask:#x}"] if r.fwmark is not None else []
        sel += ["from", r.src] if r.src else []
        sel += ["suppress_prefixlength", "0"] if r.suppress_prefixlength is not None else []
        commands.append(["sh", "-c", f"ip rule del priority {r.priority} proto 211 2>/dev/null; "
                         f"ip rule add priority {r.priority} {' '.join(sel)} "
                         f"lookup {r.table} proto 211"])

    def shell() -> None:
        for cmd in commands:
            subprocess.run(cmd, check=True, capture_output=True)

    shell_ms = median_ms(shell, runs=5 if n >= 32 else 10)
    flush(ipr, "nmbalance", 211)
    os.unlink(f.name)
    print(f"{n:>3} uplinks: decide {decide_ms:5.2f} ms | daemon apply: health change "
          f"{contents_ms:5.2f} ms ({no_ct_ms:4.2f} without conntrack flush), shares retuned "
          f"{retune_ms:4.2f} ms, "
          f"structure changed in place {in_place_ms:6.2f} ms, "
          f"table replaced {full_ms:6.2f} ms | one-shot apply "
          f"{oneshot_ms:6.2f} ms | shell baseline {shell_ms:7.1f} ms ({len(commands)} commands)"
          f" | table replaced / shell = {full_ms / shell_ms:.3f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        inside(int(sys.argv[2]))
        return
    print(f"nmbalance apply time (median of {RUNS}, in-process; baseline: the same plan by shell)")
    for n in [int(a) for a in sys.argv[1:]] or (2, 8, 32, 64):
        rerun_inside(__file__, f"nmbb{os.getpid() % 10000}a{n}", uplinks_batch(n), [str(n)])

if __name__ == "__main__":
    main()
