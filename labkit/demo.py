"""The README's demo: 3 simulated ISPs and a LAN, balanced by nmbalance.

Shows new connections spreading by weight (1:3:2), leaving an uplink whose
carrier is pulled, an administrator leaving one out (`apply ISP1 ISP3`), and
everything coming back. Every packet stays inside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import sys
import time

from labkit.lab import Lab, isp_probe

CONFIG = f"""\
# The demo's embedded config: weights 1:3:2, probes inside the lab.
mode = "weighted"
snippets_dir = ""

[[uplink]]
name = "ISP1"
interface = "wan1"
weight = 1
probe = ["{isp_probe(1)}"]

[[uplink]]
name = "ISP2"
interface = "wan2"
weight = 3
probe = ["{isp_probe(2)}"]

[[uplink]]
name = "ISP3"
interface = "wan3"
weight = 2
probe = ["{isp_probe(3)}"]

[[lan]]
name = "LAN"
interface = "lan0"
"""


def bars(tally: dict[int, int], isps: int) -> str:
    total = sum(tally.values()) or 1
    lines = []
    for n in range(1, isps + 1):
        share = tally.get(n, 0) / total
        lines.append(f"    ISP{n} {'#' * round(share * 50):<50} {tally.get(n, 0):4d} ({share:5.1%})")
    if tally.get(0):
        lines.append(f"    failed {tally[0]}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pause", type=float, default=1.5, help="seconds between steps")
    parser.add_argument("--connections", type=int, default=600)
    args = parser.parse_args()

    def step(title: str) -> None:
        print(f"\n== {title}", flush=True)
        time.sleep(args.pause)

    def apply(*uplinks: str) -> None:
        result = lab.nmbalance("apply", "-c", str(config), *uplinks)
        sys.stdout.write("".join(f"    {line}\n" for line in result.stdout.splitlines()))
        if result.returncode != 0:
            raise SystemExit(f"nmbalance apply failed: {result.stderr}")

    def traffic() -> None:
        print(f"  {args.connections} new connections from the LAN, counted at the server:")
        print(bars(lab.connections(args.connections), lab.isps), flush=True)

    lab = Lab(isps=3)
    print(f"Building the lab (namespaces {lab.prefix}-*): LAN -- router -- ISP1..3 -- internet")
    with lab:
        config = lab.workdir / "nmbalance.toml"
        config.write_text(CONFIG)
        step("nmbalance apply (weights 1:3:2)")
        apply()
        traffic()
        step("ISP2's cable is pulled (carrier lost); nmbalance apply")
        lab.carrier(2, False)
        apply()
        traffic()
        step("ISP2 is back; nmbalance apply")
        lab.carrier(2, True)
        apply()
        traffic()
        step("The administrator leaves ISP2 out: nmbalance apply ISP1 ISP3")
        apply("ISP1", "ISP3")
        traffic()
        step("nmbalance status")
        status = lab.nmbalance("status", "-c", str(config))
        sys.stdout.write("".join(f"    {line}\n" for line in status.stdout.splitlines()))
        step("nmbalance flush, then the lab is removed")
        print("    " + lab.nmbalance("flush", "-c", str(config)).stdout.strip())
    print("Done: the lab's namespaces are gone.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
