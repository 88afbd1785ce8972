"""The README's demo: 3 simulated ISPs and a LAN, balanced by `nmbalance run`.

The daemon spreads new connections by weight (1:3:2); then ISP2's cable is
pulled and plugged back, ISP3 fails silently (carrier up, nothing gets
through) and heals, and a firewall reload flushes the whole ruleset: watch
new connections leave each uplink and come back, and the daemon put its
table back, with its own log lines. Every packet stays inside the lab's
namespaces.
"""

from __future__ import annotations

import argparse
import signal
import time

from labkit.daemon import DaemonProcess
from labkit.lab import SERVER_ADDR, Lab, isp_probe
from labkit.managers import Bus

CONFIG = f"""\
# The demo's embedded config: weights 1:3:2, probes inside the lab, and
# faster health timings than the defaults so the demo doesn't drag.
mode = "weighted"
snippets_dir = ""

[health]
interval_ms = 500
max_successive_pkts_lost = 3
min_successive_pkts_rcvd = 4
hold_time = 2

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
        time.sleep(args.pause)
        print(f"\n== {title}", flush=True)

    def traffic() -> None:
        tally = lab.connections(args.connections)
        print(f"  {args.connections} new connections from the LAN, counted at the server:")
        print(bars(tally, lab.isps), flush=True)

    lab = Lab(isps=3)
    print(f"Building the lab (namespaces {lab.prefix}-*): LAN -- router -- ISP1..3 -- internet")
    with lab:
        config = lab.write(CONFIG)
        Bus(lab)  # a private system bus for the daemon's D-Bus service
        step("nmbalance run (the daemon; its log is shown behind 'daemon|')")
        daemon = DaemonProcess(lab, config, echo="    daemon| ")
        daemon.wait_for("running:")
        traffic()

        step("ISP2's cable is pulled (carrier lost)")
        mark, pulled = daemon.mark(), time.monotonic()
        lab.carrier(2, False)
        applied, _ = daemon.wait_for(r"applied .*ISP2 down", after=mark)
        print(f"  ISP2 left rotation {1000 * (applied - pulled):.0f} ms after the carrier went")
        traffic()

        step("ISP2's cable is back: it must answer probes, then stay healthy for the hold time")
        mark, plugged = daemon.mark(), time.monotonic()
        lab.carrier(2, True)
        applied, _ = daemon.wait_for(r"applied .*ISP2 active", after=mark, timeout=30)
        print(f"  ISP2 back in rotation after {applied - plugged:.1f} s")
        traffic()

        step("ISP3 fails silently upstream: carrier up, nothing gets through")
        mark, cut = daemon.mark(), time.monotonic()
        lab.blackhole(3, True)
        applied, _ = daemon.wait_for(r"applied .*ISP3 down", after=mark, timeout=30)
        print(f"  ISP3 left rotation {applied - cut:.1f} s after the failure "
              "(3 probes lost, one every 0.5 s)")
        traffic()

        step("ISP3 heals: it comes back once its last 20 probes are clean again, and the hold")
        mark, healed = daemon.mark(), time.monotonic()
        lab.blackhole(3, False)
        applied, _ = daemon.wait_for(r"applied .*ISP3 active", after=mark, timeout=60)
        print(f"  ISP3 back in rotation after {applied - healed:.1f} s")
        traffic()

        step("A firewall reload runs `nft flush ruleset`: every table goes, nmbalance's too")
        mark, flushed = daemon.mark(), time.monotonic()
        lab.sh(lab.rtr, "nft", "flush", "ruleset")
        repaired, _ = daemon.wait_for(r"drift repaired .*by nft", after=mark)
        print(f"  the daemon put its table back {1000 * (repaired - flushed):.0f} ms later")
        traffic()

        step("The administrator leaves ISP1 out (nmbalance disable ISP1, over D-Bus), then "
             "nmbalance status asks the daemon")
        mark = daemon.mark()
        print("    $ nmbalance disable ISP1\n    " + lab.nmbalance("disable", "ISP1").stdout.strip())
        daemon.wait_for(r"applied .*ISP1 left-out", after=mark)
        asked: list[list[str]] = [["status"], ["explain", "--src", "10.250.0.2", "--dst",
                                                SERVER_ADDR, "--proto", "tcp", "--dport", "443"]]
        for words in asked:
            print(f"    $ nmbalance {' '.join(words)}")
            shown = lab.nmbalance(*words, "-c", config)
            print("".join(f"    {line}\n" for line in shown.stdout.splitlines()), end="")
        traffic()

        step("The daemon stops (SIGTERM), nmbalance flush, then the lab is removed")
        daemon.stop(signal.SIGTERM)
        print("    " + lab.nmbalance("flush", "-c", config).stdout.strip())
    print("Done: the lab's namespaces are gone.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
