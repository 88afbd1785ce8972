"""IPv6 forwarding throughput under ipv6 = "nat66", "npt" and "prefix" against plain IPv6
forwarding with masquerade (one nft rule), and an A/A pair (plain against plain)
for the noise floor of this machine, all in the same run.

The same lab path for all (LAN -> router -> ISP1 -> server, dual-stack lab,
the ISP filtering by source prefix, so a ULA LAN gets out only masqueraded),
offloads off so every 1500-byte packet is forwarded on its own. Each round
runs plain, nat66, npt, prefix and plain again back to back (for prefix the
LAN host holds an address in ISP1's delegated prefix for that run only); the figures are the medians
of the per-round ratios with their range (this machine is noisy: see the A/A).
nmbalance runs in priority mode with ISP1 on top, so every run uses ISP1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import CONFIG, PLAIN, offloads_off  # noqa: E402
from labkit.lab import SERVER_ADDR6, Lab, isp_pd6  # noqa: E402

CONFIG6 = CONFIG.replace('mode = "priority"\n', 'mode = "priority"\nipv6 = "nat66"\n')
CONFIG_NPT = CONFIG.replace('mode = "priority"\n', 'mode = "priority"\nipv6 = "npt"\n').replace(
    'interface = "wan1"\n', f'interface = "wan1"\nprefix6 = "{isp_pd6(1)}"\n')
CONFIG_PREFIX = CONFIG_NPT.replace('ipv6 = "npt"', 'ipv6 = "prefix"')
PREFIX_HOST = "2001:db8:101:100::2/64"  # in ISP1's first /64, as SLAAC would give it
PLAIN6 = PLAIN.replace('masquerade', 'meta nfproto ipv6 masquerade')


def iperf(lab: Lab, seconds: int) -> float:
    out = lab.sh(lab.lan, "iperf3", "-6", "-c", SERVER_ADDR6, "-t", str(seconds), "-J").stdout
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9


def plain(lab: Lab, seconds: int) -> float:
    lab.sh(lab.rtr, "nft", PLAIN6)
    try:
        return iperf(lab, seconds)
    finally:
        lab.sh(lab.rtr, "nft", "delete table inet plain")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (range {min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    with Lab(isps=2) as lab:
        lab.dual_stack()
        offloads_off(lab)
        server = lab.spawn(lab.inet, "iperf3", "-s", "-B", SERVER_ADDR6)
        time.sleep(0.5)
        configs = {}
        radvd = f'[radvd]\nconfig = "{lab.workdir}/radvd.conf"\n'
        for mode, text in (("nat66", CONFIG6), ("npt", CONFIG_NPT),
                           ("prefix", CONFIG_PREFIX + radvd)):
            configs[mode] = lab.workdir / f"{mode}.toml"
            configs[mode].write_text(text)
        ratios: dict[str, list[float]] = {mode: [] for mode in configs}
        aa, rates = [], []
        for _ in range(args.rounds):
            a = plain(lab, args.seconds)
            got = [a]
            for mode, path in configs.items():
                if mode == "prefix":
                    lab.ip(lab.lan, "-6", "addr", "add", PREFIX_HOST, "dev", "eth0", "nodad")
                assert lab.nmbalance("apply", "-c", str(path)).returncode == 0
                got.append(iperf(lab, args.seconds))
                assert lab.nmbalance("flush", "-c", str(path)).returncode == 0
                if mode == "prefix":
                    lab.ip(lab.lan, "-6", "addr", "del", PREFIX_HOST, "dev", "eth0")
                ratios[mode].append(got[-1] / a)
            c = plain(lab, args.seconds)
            got.append(c)
            aa.append(c / a)
            rates.append(got)
        server.terminate()
    print(f"IPv6 forwarding, 1 TCP stream, offloads off, {args.rounds} rounds of "
          f"plain / nat66 / npt / prefix / plain, {args.seconds} s each")
    print("  Gbit/s per round (plain, nat66, npt, prefix, plain): "
          + "; ".join(" ".join(f"{x:.2f}" for x in r) for r in rates))
    print(f"  nat66 / plain masquerade: {spread(ratios['nat66'])}")
    print(f"  npt / plain masquerade:   {spread(ratios['npt'])}")
    print(f"  prefix / plain masquerade: {spread(ratios['prefix'])} (routed, no NAT)")
    print(f"  A/A, plain / plain:       {spread(aa)}")


if __name__ == "__main__":
    main()
