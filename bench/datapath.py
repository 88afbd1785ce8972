"""The datapath's cost, against plain forwarding + masquerade in the same run.

One lab path (LAN -> router -> ISP1 -> server), offloads off so each packet is
forwarded on its own. Each round runs every configuration back to back on
each test, plain first and plain again last (the A/A pair: this machine's
noise floor), and the figures are the medians of the per-round ratios to the
round's first plain run, with their range. Configurations:

  plain       one nft rule: masquerade on wan1 (no balancing at all)
  nmbalance   our table, priority mode with ISP1 on top (every run uses ISP1)
  rules-100   the same with 100 [[rule]]s that the traffic does not match
  rules-1000  ... and with 1000: the cost of a new connection should not grow
  nib         Net-ISP-Balance's design: iptables mangle CONNMARK restore/save
              and a statistic match per new connection, masquerade, fwmark rule

Tests:

  tcp1   one TCP stream, 1500-byte packets (iperf3), Gbit/s, LAN to server
  down1  the same from the server to the LAN (iperf3 -R): replies, most of what a home
         forwards
  tcp8   eight TCP streams (iperf3 -P 8), Gbit/s
  pps    64-byte UDP packets of one flow (labkit.flood same), packets/s received
  cps    64-byte UDP packets each a new flow (labkit.flood new): new connections/s

Run as root: python bench/datapath.py [--rounds N] [--tests tcp1,cps ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import CONFIG, PLAIN, offloads_off  # noqa: E402
from labkit.lab import LAN_NET, SERVER_ADDR, Lab, isp_gateway  # noqa: E402

SINK = ("add table inet sink; add counter inet sink got; add chain inet sink pre { type "
        "filter hook prerouting priority -300; }; add rule inet sink pre udp dport 9-65535 "
        'counter name "got" drop')
NIB = [  # Net-ISP-Balance's mangle design (iptables-nft, as a Debian host runs it)
    ["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "lan0", "-j", "CONNMARK",
     "--restore-mark"],
    ["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "lan0", "-m", "mark", "!", "--mark",
     "0", "-j", "ACCEPT"],
    ["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "lan0", "-m", "state", "--state",
     "NEW", "-m", "statistic", "--mode", "random", "--probability", "1", "-j", "MARK",
     "--set-mark", "1"],
    ["iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "lan0", "-j", "CONNMARK",
     "--save-mark"],
    ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan1", "-j", "MASQUERADE"],
]


def rules(n: int) -> str:
    """`n` rules no bench packet meets (other destinations, TCP 443), as a site with a
    long list of per-service rules has."""
    return "".join(f'[[rule]]\nname = "r{i}"\ndst = ["10.{100 + i // 256}.{i % 256}.0/24"]\n'
                   f'proto = "tcp"\ndport = [443]\nmethod = "enforced"\nuplinks = ["ISP2"]\n'
                   for i in range(n))


class Bench:
    def __init__(self, lab: Lab, seconds: float) -> None:
        self.lab = lab
        self.seconds = seconds
        self.server: subprocess.Popen[str] | None = None
        self.configs: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
            "plain": (lambda: self.nft(PLAIN), lambda: self.nft("delete table inet plain")),
            "nmbalance": self.ours(0), "rules-100": self.ours(100),
            "rules-1000": self.ours(1000), "nib": (self.nib_on, self.nib_off)}

    def nft(self, text: str) -> None:
        self.lab.sh(self.lab.rtr, "nft", text)

    def ours(self, n: int) -> tuple[Callable[[], None], Callable[[], None]]:
        path = self.lab.write(CONFIG + rules(n), f"rules{n}.toml")

        def on() -> None:
            assert self.lab.nmbalance("apply", "-c", path).returncode == 0

        def off() -> None:
            assert self.lab.nmbalance("flush", "-c", path).returncode == 0
        return on, off

    def nib_on(self) -> None:
        for cmd in NIB:
            self.lab.sh(self.lab.rtr, *cmd)
        self.lab.ip(self.lab.rtr, "route", "add", "default", "via", isp_gateway(1), "dev",
                    "wan1", "table", "101")
        self.lab.ip(self.lab.rtr, "rule", "add", "fwmark", "1", "lookup", "101",
                    "priority", "7000")

    def nib_off(self) -> None:
        for table in ("mangle", "nat"):
            self.lab.sh(self.lab.rtr, "iptables", "-t", table, "-F")
        self.lab.ip(self.lab.rtr, "rule", "del", "priority", "7000", check=False)
        self.lab.ip(self.lab.rtr, "route", "flush", "table", "101", check=False)

    def iperf(self, streams: int, reverse: bool = False) -> float:
        # A stream whose connection is lost in the lab would hold the test, and the
        # server, for ever: bounded, and tried again once.
        cmd = ["timeout", str(self.seconds + 15), "iperf3", "-c", SERVER_ADDR, "-t",
               str(self.seconds), "-P", str(streams), "--connect-timeout", "3000",
               *(["-R"] if reverse else []), "-J"]
        for attempt in (1, 2):
            done = self.lab.sh(self.lab.lan, *cmd, check=attempt == 2)
            if done.returncode == 0:
                break
            self.start_server()  # iperf3's server can stay stuck in a test that failed
        return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9

    def start_server(self) -> None:
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(2)
            except subprocess.TimeoutExpired:  # stuck too deep to hear SIGTERM
                self.server.kill()
                self.server.wait()
        self.server = self.lab.spawn(self.lab.inet, "iperf3", "-s", "-B", SERVER_ADDR)
        time.sleep(0.5)

    def flood(self, mode: str) -> float:
        lab = self.lab
        lab.sh(lab.inet, "nft", "reset counter inet sink got")
        seconds = 0.4 if mode == "new" else self.seconds / 2  # new: within conntrack_max
        out = lab.sh(lab.lan, sys.executable, "-m", "labkit.flood", f"{LAN_NET}.2",
                     SERVER_ADDR, str(seconds), mode).stdout.split()
        time.sleep(0.2)  # what is still in flight arrives
        listing = json.loads(lab.sh(lab.inet, "nft", "-j", "list", "counter", "inet", "sink",
                                    "got").stdout)
        received = next(item["counter"]["packets"] for item in listing["nftables"]
                        if "counter" in item)
        lab.sh(lab.rtr, "conntrack", "-F", check=False)
        return received / float(out[1])

    def run(self, test: str) -> float:
        if test.startswith("tcp"):
            return self.iperf(int(test[3:]))
        if test == "down1":
            return self.iperf(1, reverse=True)
        return self.flood("new" if test == "cps" else "same")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):5.3f} (range {min(values):5.3f}-{max(values):5.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--tests", default="tcp1,down1,tcp8,pps,cps")
    parser.add_argument("--verbose", action="store_true", help="name each run as it starts")
    args = parser.parse_args()
    tests = args.tests.split(",")
    with Lab(isps=2) as lab:
        offloads_off(lab)
        lab.sh(lab.inet, "nft", SINK)
        bench = Bench(lab, args.seconds)
        bench.start_server()
        names = [*bench.configs, "plain (A/A)"]
        raw: dict[str, dict[str, list[float]]] = {t: {n: [] for n in names} for t in tests}
        for _ in range(args.rounds):
            for test in tests:
                for name in names:
                    on, off = bench.configs[name.removesuffix(" (A/A)")]
                    if args.verbose:
                        print(f"{test} {name}", file=sys.stderr, flush=True)
                    on()
                    try:
                        raw[test][name].append(bench.run(test))
                    finally:
                        off()
        if bench.server is not None:
            bench.server.terminate()
    units = {"tcp1": "Gbit/s", "down1": "Gbit/s", "tcp8": "Gbit/s", "pps": "packets/s",
             "cps": "new flows/s"}
    print(f"datapath cost, offloads off, {args.rounds} rounds; ratio to the round's first plain "
          "run, median (range)")
    for test in tests:
        plain = raw[test]["plain"]
        print(f"{test} ({units[test]}; plain median {statistics.median(plain):,.3f})")
        for name in names[1:]:
            ratios = [x / p for x, p in zip(raw[test][name], plain, strict=True)]
            print(f"  {name:<12} {spread(ratios)}   median {statistics.median(raw[test][name]):,.3f}")


if __name__ == "__main__":
    main()
