"""IPv6 failover under ipv6 = "nat66" next to IPv4's, in the same run and the
same failures.

A dual-stack lab of 2 ISPs (BCP38: each forwards only its own prefix), the
daemon with the default [health] and one probe target per family per uplink.
Two LAN clients open a new connection every 2 ms each throughout, one over
IPv4 and one over IPv6; a connection "used" the dead uplink when it failed
or got through only on a SYN retransmit (>= 0.5 s).

- carrier loss and silent blackhole of a whole ISP: each family's failover
  (failure to the start of the last new connection that still went to the
  dead uplink) and recovery (repair to the first new connection through it);
- IPv6 alone dying (the ISP forwards no IPv6, its IPv4 and carrier stay):
  IPv6's failover, and how many IPv4 connections the uplink kept taking.

Each trial gives a pair (IPv6, IPv4) from the same failure; the figure is the
median of the per-trial ratios IPv6 / IPv4, with their range. Target: IPv6
fails over as fast as IPv4 (ratio ~1), and IPv6 dying alone costs IPv4 nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.daemon import DaemonProcess  # noqa: E402
from labkit.lab import SERVER_ADDR, SERVER_ADDR6, SERVER_PORT, Lab  # noqa: E402

GAP_MS = 2.0
SLOW = 0.5


def trickle(lab: Lab, server: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        lab.python(lab.lan, "labkit.trickle", server, str(SERVER_PORT), str(GAP_MS)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))


def fail(lab: Lab, kind: str, n: int, failed: bool) -> None:
    if kind == "carrier":
        lab.carrier(n, not failed)
    elif kind == "blackhole":
        lab.blackhole(n, failed)
    else:
        lab.ipv6_dead(n, failed)


def times(lab: Lab, out: str, n: int, failed_at: float, repaired_at: float
          ) -> tuple[float, float, int]:
    """(failover s, recovery s, connections through n while it was failed)."""
    conns = [(float(s), float(e), src) for s, e, src in (line.split() for line in out.splitlines())]
    dead = [s for s, e, src in conns
            if failed_at - 0.2 <= s <= repaired_at and (src == "-" or e - s >= SLOW)]
    back = [s for s, e, src in conns
            if s >= repaired_at and src != "-" and lab.isp_of(src) == n and e - s < SLOW]
    kept = sum(1 for s, e, src in conns if failed_at + 3 <= s <= repaired_at
               and src != "-" and lab.isp_of(src) == n)
    failover = max(max(dead) - failed_at, 0.0) if dead else 0.0
    return failover, (min(back) - repaired_at) if back else float("nan"), kept


def flip(lab: Lab, daemon: DaemonProcess, kind: str, n: int, failed: bool) -> float:
    """Fail or repair ISP n and wait until the daemon says so for every family it
    touches; when it was done."""
    mark = daemon.mark()
    fail(lab, kind, n, failed)
    done = time.time()
    word, timeout = ("down", 30) if failed else ("up", 60)
    daemon.wait_for(rf"ISP{n} IPv6 {word}", after=mark, timeout=timeout)
    if kind != "ipv6":
        daemon.wait_for(rf"ISP{n} {word}", after=mark, timeout=timeout)
    return done


def trial(lab: Lab, daemon: DaemonProcess, kind: str, n: int
          ) -> dict[int, tuple[float, float, int]]:
    clients = {4: trickle(lab, SERVER_ADDR), 6: trickle(lab, SERVER_ADDR6)}
    time.sleep(1.0)
    failed_at = flip(lab, daemon, kind, n, True)
    time.sleep(4.0)
    repaired_at = flip(lab, daemon, kind, n, False)
    time.sleep(1.0)
    out = {family: c.communicate("", timeout=60)[0] for family, c in clients.items()}
    return {family: times(lab, text, n, failed_at, repaired_at) for family, text in out.items()}


def spread(values: list[float]) -> str:
    return (f"{statistics.median(values):.2f} (range {min(values):.2f}-{max(values):.2f})"
            if values else "n/a")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[dict[int, tuple[float, float, int]]]] = {
        "carrier": [], "blackhole": [], "ipv6": []}
    with Lab(isps=2) as lab:
        lab.dual_stack()
        daemon = DaemonProcess(lab, lab.write(lab.config(weights=(1,), ipv6=True)))
        daemon.wait_for("running:")
        for i in range(args.trials):  # interleaved: each kind meets the same machine state
            for j, kind in enumerate(rows):
                rows[kind].append(trial(lab, daemon, kind, 1 + (i + j) % 2))
        daemon.stop()
    print(f"failover under ipv6 = \"nat66\", 2 dual-stack uplinks, default [health] (1 probe/s "
          f"per family, down after 3 lost, + 5 s hold), {args.trials} trials each")
    print(f"{'failure':<10} {'IPv4 failover':>14} {'IPv6 failover':>14} {'IPv6/IPv4 per trial':>30}"
          f" {'IPv4 recovery':>14} {'IPv6 recovery':>14}")
    for kind in ("carrier", "blackhole"):
        r = rows[kind]
        f4, f6 = [t[4][0] for t in r], [t[6][0] for t in r]
        ratios = [b / a for a, b in zip(f4, f6, strict=True) if a > 0]
        print(f"{kind:<10} {statistics.median(f4) * 1000:11.0f} ms {statistics.median(f6) * 1000:11.0f}"
              f" ms {spread(ratios):>30} {statistics.median(t[4][1] for t in r):12.2f} s"
              f" {statistics.median(t[6][1] for t in r):12.2f} s")
    r = rows["ipv6"]
    f6 = [t[6][0] for t in r]
    blackhole4 = [t[4][0] for t in rows["blackhole"]]
    print(f"IPv6 alone dead: IPv6 failover {statistics.median(f6) * 1000:.0f} ms median "
          f"({statistics.median(f6) / statistics.median(blackhole4):.2f}x IPv4's blackhole in this "
          f"run); IPv4 connections the uplink kept taking meanwhile: "
          f"{sum(t[4][2] for t in r)} in {len(r)} trials (its IPv6 ones: {sum(t[6][2] for t in r)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
