"""The adaptive methods, timed with real traffic in the lab.

Run as root. One lab of 4 ISPs, `nmbalance run` with fast probes (200 ms).
A trickle of new connections from the LAN (one every 50 ms) shows, from the
client's side, when new connections move.

- overflow: ISP1 capped at 20 Mbit/s with tbf; from the start of a bulk
  download (iperf3 -R) until new connections leave ISP1, and from its end
  until they come back. Targets <= 2 s and <= 3 s.
- lowest-latency: ISPs delayed 40/10/25/35 ms (an NFQUEUE delayer); from
  ISP2's delay going to 60 ms until new connections use ISP3; then ISP1 and
  ISP3 1 ms apart for 30 s: how many switches (target 0).
- fastest-response: one new destination, from its first connection until it
  is learned (target <= 50 ms beyond the race itself, which waits for the
  slowest answer it needs: the fastest path's round trip); a burst of 500
  new destinations: how many learned, and the daemon's CPU per destination.
- lookup cost: forwarding throughput (iperf3, 4 s) with 200,000 learned
  entries against none, pairwise over interleaved runs: target ratio >= 0.98.
- idle: the daemon's CPU (share of a core) and RSS over 20 s with overflow
  sampling 4 uplinks' counters, against the same daemon with `weighted` in a
  second lab at the same time. Targets <= 1 % and <= 60 MB.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.failover import proc_stats  # noqa: E402
from labkit.daemon import DaemonProcess  # noqa: E402
from labkit.lab import SERVER_ADDR, SERVER_PORT, Lab, wait_for  # noqa: E402

FAST = {"interval_ms": 200, "min_successive_pkts_rcvd": 3, "hold_time": 1}
GAP_MS = 50
ISPS = 4


def trickle(lab: Lab) -> subprocess.Popen[str]:
    return subprocess.Popen(
        lab.python(lab.lan, "labkit.trickle", SERVER_ADDR, str(SERVER_PORT), str(GAP_MS)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))


def finish(lab: Lab, client: subprocess.Popen[str]) -> list[tuple[float, int]]:
    """(start time, ISP) of each connection the trickle made."""
    out, _ = client.communicate("", timeout=30)
    return [(float(line.split()[0]), lab.isp_of(line.split()[2]))
            for line in out.splitlines() if line.split()[2] != "-"]


def first_after(seen: list[tuple[float, int]], since: float, isps: set[int]) -> float:
    return next((t - since for t, isp in seen if t >= since and isp in isps), float("nan"))


def daemon_with(lab: Lab, text: str) -> DaemonProcess:
    daemon = DaemonProcess(lab, lab.write(text))
    daemon.wait_for("running:")
    return daemon


def bench_overflow(lab: Lab) -> None:
    server = lab.spawn(lab.inet, "iperf3", "-s", "-B", SERVER_ADDR)
    lab.sh(lab.isp(1), "tc", "qdisc", "replace", "dev", "rtr", "root", "tbf", "rate", "20mbit",
           "burst", "32kbit", "latency", "50ms")
    text = lab.config("overflow", weights=(4, 3, 2, 1), health=FAST)
    for n in range(1, ISPS + 1):
        text = text.replace(f'interface = "wan{n}"\n',
                            f'interface = "wan{n}"\ncapacity_mbps = {20 if n == 1 else 1000}\n')
    daemon = daemon_with(lab, text)
    moves, backs = [], []
    try:
        daemon.wait_for(r"ISP1 takes new connections", timeout=20)
        for _ in range(3):
            client = trickle(lab)
            time.sleep(1.0)
            mark = daemon.mark()
            started = time.time()
            bulk = lab.spawn(lab.lan, "iperf3", "-c", SERVER_ADDR, "-R", "-t", "30", "-P", "2")
            daemon.wait_for(r"ISP2 takes new connections", after=mark, timeout=15)
            time.sleep(1.0)
            stopped = time.time()
            bulk.terminate()
            bulk.wait()
            daemon.wait_for(r"ISP1 takes new connections", after=mark + 1, timeout=15)
            time.sleep(1.0)
            seen = finish(lab, client)
            moves.append(first_after(seen, started, {2}))
            backs.append(first_after(seen, stopped, {1}))
    finally:
        daemon.stop()
        lab.sh(lab.isp(1), "tc", "qdisc", "del", "dev", "rtr", "root", check=False)
        server.terminate()
        server.wait()
    print(f"overflow: saturated -> moved {statistics.median(moves):.2f} s "
          f"(runs {', '.join(f'{m:.2f}' for m in moves)}; target <= 2 s); load stopped -> "
          f"back {statistics.median(backs):.2f} s "
          f"(runs {', '.join(f'{b:.2f}' for b in backs)}; target <= 3 s)")


def bench_latency(lab: Lab) -> None:
    for n, ms in zip(range(1, ISPS + 1), (40, 10, 25, 35), strict=True):
        lab.delay(n, ms)
    daemon = daemon_with(lab, lab.config("lowest-latency", weights=(1,), health=FAST))
    try:
        daemon.wait_for(r"ISP2 is the fastest", timeout=20)
        client = trickle(lab)
        time.sleep(1.0)
        changed = time.time()
        lab.delay(2, 60)
        daemon.wait_for(r"ISP3 is the fastest", timeout=20)
        time.sleep(1.0)
        switch = first_after(finish(lab, client), changed, {3})
        mark = daemon.mark()
        lab.delay(1, 24)
        time.sleep(30)
        flaps = daemon.count(r"is the fastest", after=mark)
    finally:
        daemon.stop()
        for key in list(lab.delayed):
            lab.delay(key[0], 0, key[1])
    print(f"lowest-latency: delay change -> new connections moved {switch:.2f} s "
          f"(probe rounds 0.2 s, averaged round trips, 2 s dwell; target <= 2.4 s); "
          f"switches with two uplinks 1 ms apart over 30 s: {flaps} (target 0)")


def _learned_count(lab: Lab) -> int:
    out = lab.sh(lab.rtr, "nft", "-j", "list", "sets", "inet").stdout
    return sum(len(item["set"].get("elem", [])) for item in json.loads(out)["nftables"]
               if "set" in item and item["set"]["name"].startswith("st_default__"))


def bench_fastest(lab: Lab) -> None:
    lab.sh(lab.inet, "ip", "route", "add", "local", "198.18.0.0/22", "dev", "lo")
    lab.start_server("0.0.0.0", port=9000)
    daemon = daemon_with(lab, lab.config("fastest-response", weights=(1,), health=FAST))
    try:
        one = lab.sh(lab.lan, sys.executable, "-c", (
            "import socket,time;t=time.time();"
            "socket.create_connection(('198.18.0.1', 9000), timeout=2).close();print(t)"))
        started = float(one.stdout.strip())
        assert wait_for(lambda: _learned_count(lab) >= 1, 5, interval=0.002)
        learn_ms = (time.time() - started) * 1000
        cpu0 = proc_stats(daemon.proc.pid)[0]
        burst = lab.sh(lab.lan, sys.executable, "-c", (
            "import asyncio\n"
            "async def one(a):\n"
            "    try:\n"
            "        r, w = await asyncio.wait_for(asyncio.open_connection(a, 9000), 3)\n"
            "        w.close()\n"
            "    except Exception: pass\n"
            "async def main():\n"
            "    await asyncio.gather(*(one(f'198.18.{1 + i // 250}.{1 + i % 250}') "
            "for i in range(500)))\n"
            "asyncio.run(main())"), check=False)
        assert burst.returncode == 0, burst.stderr
        wait_for(lambda: _learned_count(lab) >= 501, 20, interval=0.1)
        time.sleep(0.5)
        learned = _learned_count(lab) - 1
        cpu = proc_stats(daemon.proc.pid)[0] - cpu0
    finally:
        daemon.stop()
    print(f"fastest-response: one destination learned {learn_ms:.0f} ms after its first "
          f"connection (the race waits for the first answer, ~1 round trip); burst of 500: "
          f"{learned} learned, {cpu / max(learned, 1) * 1000:.2f} ms of daemon CPU each")


def bench_lookup(lab: Lab) -> None:
    server = lab.spawn(lab.inet, "iperf3", "-s", "-B", SERVER_ADDR)
    path = lab.write(lab.config("fastest-response", weights=(1,), probe=False), "lookup.toml")
    assert lab.nmbalance("apply", "-c", path).returncode == 0
    entries = "\n".join(
        "add element inet nmbalance st_default__ISP1 { " + ", ".join(
            f"10.{64 + (i * 1000 + j) // 65536}.{(i * 1000 + j) // 256 % 256}.{(i * 1000 + j) % 256}"
            " timeout 3600s" for j in range(1000)) + " }" for i in range(200))
    (lab.workdir / "fill.nft").write_text(entries + "\n")

    def iperf() -> float:
        out = lab.sh(lab.lan, "iperf3", "-c", SERVER_ADDR, "-t", "4", "-J").stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])

    ratios = []

    def empty() -> float:
        lab.sh(lab.rtr, "nft", "flush", "set", "inet", "nmbalance", "st_default__ISP1")
        return iperf()

    def full() -> float:
        lab.sh(lab.rtr, "nft", "-f", str(lab.workdir / "fill.nft"))
        return iperf()

    try:
        for i in range(8):  # pairs in alternating order, so drift hits both sides alike
            if i % 2:
                b, a = full(), empty()
            else:
                a, b = empty(), full()
            ratios.append(b / a)
    finally:
        lab.nmbalance("flush", "-c", path)
        server.terminate()
        server.wait()
    print(f"lookup with 200,000 learned entries / none: median {statistics.median(ratios):.3f} "
          f"(pairs {', '.join(f'{r:.3f}' for r in ratios)}; target >= 0.98; established "
          "packets never look a learned set up, only a connection's first does)")


def bench_idle() -> None:
    with Lab(isps=ISPS) as measured, Lab(isps=ISPS) as plain:
        text = measured.config("overflow", weights=(1,))
        for n in range(1, ISPS + 1):
            text = text.replace(f'interface = "wan{n}"\n',
                                f'interface = "wan{n}"\ncapacity_mbps = 100\n')
        one = daemon_with(measured, text)
        other = daemon_with(plain, plain.config("weighted", weights=(1,)))
        try:
            time.sleep(3)
            a0, b0 = proc_stats(one.proc.pid)[0], proc_stats(other.proc.pid)[0]
            time.sleep(20)
            (a1, rss), (b1, _) = proc_stats(one.proc.pid), proc_stats(other.proc.pid)
        finally:
            one.stop()
            other.stop()
    print(f"idle over 20 s: overflow (counters every 0.5 s, 4 uplinks) {(a1 - a0) / 20:.2%} of a "
          f"core, weighted {(b1 - b0) / 20:.2%} (same window): sampling costs "
          f"{(a1 - a0 - b1 + b0) / 20:.2%}; RSS {rss / 2**20:.0f} MB (targets <= 1 %, <= 60 MB)")


def main() -> None:
    with Lab(isps=ISPS) as lab:
        bench_overflow(lab)
        bench_latency(lab)
        bench_fastest(lab)
        bench_lookup(lab)
    bench_idle()


if __name__ == "__main__":
    main()
