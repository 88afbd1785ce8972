"""How fast `nmbalance run` takes a failed uplink out and brings it back, and
what the daemon costs at rest.

A lab of 4 ISPs with the default [health] (one probe per uplink per second,
down after 3 lost; up after 5 replies with at most 5 % of the 20-probe window
lost, then a 5 s hold). A LAN client opens a new connection every 2 ms
throughout; a connection "used" the dead uplink when it failed, or succeeded
only on a SYN retransmit (>= 0.5 s).

- carrier loss (ISP end of the cable down) and silent blackhole (carrier up,
  everything dropped upstream): time from the failure to the start of the
  last new connection that still went to the dead uplink; recovery: from the
  repair to the first new connection through it again.
- lossy links (30 % and 50 % random loss upstream, carrier up): time from the
  loss starting to the uplink leaving rotation, in probe intervals, and how
  many times it was let back in (recovering) while the loss went on.
- idle: RSS and CPU of the daemon over 60 s, 4 uplinks probing at 1 Hz, no
  traffic; the baseline is a bare Python interpreter started the same way.

Targets: carrier <= 100 ms; blackhole <= interval x 3 + 0.5 s; 50 % loss out
within 6 intervals, and no re-admission under either loss; RSS <= 60 MB; CPU
<= 1 % of a core.
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
from labkit.lab import SERVER_ADDR, SERVER_PORT, Lab, isp_router_addr  # noqa: E402

ISPS = 4
GAP_MS = 2.0
SLOW = 0.5  # a connection this slow met a dead uplink first and got through on a retransmit
INTERVAL = 1.0
TARGETS = {"carrier": 0.100, "blackhole": INTERVAL * 3 + 0.5}


def trickle(lab: Lab) -> subprocess.Popen[str]:
    return subprocess.Popen(
        lab.python(lab.lan, "labkit.trickle", SERVER_ADDR, str(SERVER_PORT), str(GAP_MS)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def fail(lab: Lab, kind: str, n: int, failed: bool) -> None:
    """Pull ISP n's cable, or blackhole it upstream; or repair that."""
    if kind == "carrier":
        lab.carrier(n, not failed)
    else:
        lab.blackhole(n, failed)


def trial(lab: Lab, daemon: DaemonProcess, kind: str, n: int) -> tuple[float, float, float]:
    """One failure and repair of ISP n: (failover s, recovery s, hold time in effect s)."""
    client = trickle(lab)
    time.sleep(1.0)
    mark = daemon.mark()
    fail(lab, kind, n, True)
    failed_at = time.time()
    daemon.wait_for(rf"applied .*ISP{n} down", after=mark, timeout=30)
    time.sleep(1.0)
    mark = daemon.mark()
    fail(lab, kind, n, False)
    repaired_at = time.time()
    _, line = daemon.wait_for(rf"ISP{n} recovering: .*holding", after=mark, timeout=60)
    hold = float(line.rsplit("holding", 1)[1].split()[0])
    daemon.wait_for(rf"applied .*ISP{n} active", after=mark, timeout=60)
    time.sleep(0.5)
    out, _ = client.communicate("", timeout=30)
    rows = [line.split() for line in out.splitlines()]
    conns = [(float(s), float(e), src) for s, e, src in rows]
    dead = [s for s, e, src in conns
            if failed_at - 0.2 <= s <= repaired_at and (src == "-" or e - s >= SLOW)]
    back = [s for s, e, src in conns
            if s >= repaired_at and src == isp_router_addr(n) and e - s < SLOW]
    failover = max(dead) - failed_at if dead else 0.0
    recovery = min(back) - repaired_at if back else float("nan")
    return max(failover, 0.0), recovery, hold


def lossy_trial(lab: Lab, daemon: DaemonProcess, percent: int, n: int, sustain: float
                ) -> tuple[float, int]:
    """ISP n loses `percent` % of its traffic: (seconds to out, re-admissions while lossy)."""
    mark = daemon.mark()
    lab.lossy(n, percent)
    started = time.monotonic()
    down, _ = daemon.wait_for(rf"ISP{n} down", after=mark, timeout=60)
    mark = daemon.mark()
    time.sleep(sustain)
    readmitted = daemon.count(rf"ISP{n} recovering", after=mark)
    lab.lossy(n, None)
    daemon.wait_for(rf"applied .*ISP{n} active", after=mark, timeout=120)
    return down - started, readmitted


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds used so far and RSS in bytes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text(
        ).splitlines() if line.startswith("VmRSS:"))
    return cpu, rss


def resting_rss(lab: Lab, imports: str) -> int:
    """RSS of an interpreter that only imports and sleeps: the baseline."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.rtr, sys.executable, "-c", f"{imports}; time.sleep(600)"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        time.sleep(3.0)
        return proc_stats(proc.pid)[1]
    finally:
        proc.kill()
        proc.wait()


def idle(lab: Lab, pid: int, seconds: float) -> tuple[float, int]:
    cpu0, _ = proc_stats(pid)
    peak = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, proc_stats(pid)[1])
        time.sleep(1.0)
    cpu1, rss = proc_stats(pid)
    return (cpu1 - cpu0) / seconds, max(peak, rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument("--lossy-trials", type=int, default=5)
    parser.add_argument("--sustain", type=float, default=40.0,
                        help="seconds a lossy uplink stays lossy after it went out")
    args = parser.parse_args()
    with Lab(isps=ISPS) as lab:
        config = lab.write(lab.config(weights=(1,)))
        daemon = DaemonProcess(lab, config)
        daemon.wait_for("running:")
        results: dict[str, list[tuple[float, float, float]]] = {"carrier": [], "blackhole": []}
        for i in range(args.trials):
            for j, kind in enumerate(results):
                results[kind].append(trial(lab, daemon, kind, 1 + (2 * i + j) % ISPS))
        lossy: dict[int, list[tuple[float, int]]] = {30: [], 50: []}
        for i in range(args.lossy_trials):
            for j, percent in enumerate(lossy):
                lossy[percent].append(lossy_trial(lab, daemon, percent,
                                                  1 + (2 * i + j) % ISPS, args.sustain))
        # Idle: no traffic, the daemon only probing.
        time.sleep(2)
        cpu, rss = idle(lab, daemon.proc.pid, args.idle)
        bare_rss = resting_rss(lab, "import time")
        imports_rss = resting_rss(lab, "import time, nmbalance.daemon, nmbalance.cli")
        daemon.stop()

    print(f"failover with {ISPS} uplinks, default [health] (1 probe/s, down after 3 lost, "
          f"up after 5 replies, window loss <= 5 %, + 5 s hold), {args.trials} trials each")
    print(f"{'failure':<10} {'failover median':>16} {'max':>8} {'target':>8} "
          f"{'recovery median':>16} {'max':>8}   holds in effect (flap damping)")
    for kind, rows in results.items():
        fo = [r[0] for r in rows]
        rec = [r[1] for r in rows]
        holds = " ".join(f"{r[2]:g}" for r in rows)
        print(f"{kind:<10} {statistics.median(fo) * 1000:13.0f} ms {max(fo) * 1000:5.0f} ms "
              f"{TARGETS[kind] * 1000:5.0f} ms {statistics.median(rec):14.2f} s {max(rec):6.2f} s"
              f"   {holds} s")
    carrier = statistics.median(r[0] for r in results["carrier"])
    blackhole = statistics.median(r[0] for r in results["blackhole"])
    print(f"carrier loss vs probe-only detection (blackhole), same run: "
          f"{carrier / blackhole:.3f}x")
    for percent, rows in lossy.items():
        out = [r[0] / INTERVAL for r in rows]
        print(f"{percent} % loss: out after {statistics.median(out):.1f} intervals median "
              f"(max {max(out):.1f}; {statistics.median(out) * INTERVAL / blackhole:.2f}x the "
              f"blackhole's time), re-admitted {sum(r[1] for r in rows)} times in "
              f"{len(rows)} x {args.sustain:g} s of sustained loss")
    print(f"idle {args.idle:.0f} s, {ISPS} uplinks probing at 1 Hz: CPU {cpu * 100:.2f} % of a core "
          f"(target 1 %)")
    print(f"RSS {rss / 2**20:.1f} MB (target 60 MB); baselines: bare interpreter "
          f"{bare_rss / 2**20:.1f} MB ({rss / bare_rss:.1f}x), same imports at rest "
          f"{imports_rss / 2**20:.1f} MB ({rss / imports_rss:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
