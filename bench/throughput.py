"""Forwarding throughput: plain forwarding + masquerade vs nmbalance's ruleset.

Both through the same lab path (LAN -> router -> ISP1 -> server), offloads
off so every 1500-byte packet is forwarded on its own, runs interleaved,
ratio of the medians. nmbalance runs in priority mode with ISP1 on top so
both configurations use the same uplink.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.lab import SERVER_ADDR, Lab  # noqa: E402

RUNS = 7
SECONDS = 3
CONFIG = """\
mode = "priority"
snippets_dir = ""
[[uplink]]
name = "ISP1"
interface = "wan1"
weight = 2
[[uplink]]
name = "ISP2"
interface = "wan2"
weight = 1
[[lan]]
name = "LAN"
interface = "lan0"
"""
PLAIN = ("add table inet plain; add chain inet plain post "
         "{ type nat hook postrouting priority srcnat; }; "
         'add rule inet plain post oifname "wan1" masquerade')


def offloads_off(lab: Lab) -> None:
    for ns, dev in ((lab.lan, "eth0"), (lab.rtr, "lan0"), (lab.rtr, "wan1"), (lab.isp(1), "rtr"),
                    (lab.isp(1), "inet"), (lab.inet, "isp1")):
        lab.sh(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", check=False)


def iperf(lab: Lab) -> float:
    out = lab.sh(lab.lan, "iperf3", "-c", SERVER_ADDR, "-t", str(SECONDS), "-J").stdout
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9


def main() -> None:
    with Lab(isps=2) as lab:
        offloads_off(lab)
        server = lab.spawn(lab.inet, "iperf3", "-s", "-B", SERVER_ADDR)
        time.sleep(0.5)
        config = lab.workdir / "nmbalance.toml"
        config.write_text(CONFIG)
        plain: list[float] = []
        ours: list[float] = []
        for _ in range(RUNS):
            lab.sh(lab.rtr, "nft", PLAIN)
            plain.append(iperf(lab))
            lab.sh(lab.rtr, "nft", "delete table inet plain")
            assert lab.nmbalance("apply", "-c", str(config)).returncode == 0
            ours.append(iperf(lab))
            assert lab.nmbalance("flush", "-c", str(config)).returncode == 0
        server.terminate()
        mp, mo = statistics.median(plain), statistics.median(ours)
        print(f"forwarding throughput, 1 TCP stream, offloads off, {RUNS} interleaved runs of {SECONDS} s")
        print(f"  plain forwarding + masquerade: median {mp:.3f} Gbit/s  {[round(x, 3) for x in plain]}")
        print(f"  nmbalance ruleset:             median {mo:.3f} Gbit/s  {[round(x, 3) for x in ours]}")
        print(f"  ratio nmbalance/plain = {mo / mp:.3f}")


if __name__ == "__main__":
    main()
