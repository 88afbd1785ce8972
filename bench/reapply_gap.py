"""A TCP stream through the lab router while nmbalance re-applies 50 times.

Prints the largest gap between echoes and the TCP retransmissions, with the
same stream measured without re-applies as the baseline of the same run.
Half the re-applies replace the whole table (mode flips weighted <->
persistence), half rewrite only maps (an uplink left out and back).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.lab import SERVER_ADDR, SERVER_PORT, Lab  # noqa: E402

CONFIG = """\
mode = "{mode}"
snippets_dir = ""
[[uplink]]
name = "ISP1"
interface = "wan1"
[[uplink]]
name = "ISP2"
interface = "wan2"
[[uplink]]
name = "ISP3"
interface = "wan3"
[[lan]]
name = "LAN"
interface = "lan0"
"""


def retransmits(lab: Lab) -> int:
    out = lab.sh(lab.lan, "cat", "/proc/net/snmp").stdout.splitlines()
    tcp = [line.split() for line in out if line.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("RetransSegs")])


def stream(lab: Lab, seconds: float, during: object = None) -> dict[str, float]:
    before = retransmits(lab)
    proc = subprocess.Popen(lab.python(lab.lan, "labkit.stream", SERVER_ADDR, str(SERVER_PORT),
                                       str(seconds), "2"),
                            stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT)})
    lab.procs.append(proc)
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    worker = threading.Thread(target=during, args=(port,)) if callable(during) else None
    if worker:
        worker.start()
    result: dict[str, float] = json.loads(proc.stdout.readline())
    proc.wait()
    if worker:
        worker.join()
    result["retransmits"] = retransmits(lab) - before
    return result


def main() -> None:
    with Lab(isps=3) as lab:
        weighted = lab.workdir / "w.toml"
        sticky = lab.workdir / "p.toml"
        weighted.write_text(CONFIG.format(mode="weighted"))
        sticky.write_text(CONFIG.format(mode="persistence"))
        assert lab.nmbalance("apply", "-c", str(weighted)).returncode == 0
        baseline = stream(lab, 8)
        times: list[float] = []

        def reapply(port: int) -> None:
            out = lab.sh(lab.rtr, "conntrack", "-L", "-p", "tcp", "--sport", str(port)).stdout
            mine = int(out.split("mark=")[1].split()[0]) >> 8
            other = next(n for n in (1, 2, 3) if n != mine)
            keep = [f"ISP{n}" for n in (1, 2, 3) if n != other]
            for i in range(50):
                if i % 2:
                    args = ["-c", str(sticky if i % 4 == 1 else weighted)]
                else:
                    args = ["-c", str(weighted if i % 4 else sticky)] + (keep if i % 4 == 0 else [])
                result = lab.nmbalance("apply", *args)
                assert result.returncode == 0, result.stderr
                times.append(1)

        during = stream(lab, 8, reapply)
        print("stream through the lab router, 8 s, one 8-byte echo every 2 ms")
        print(f"  baseline (no re-apply): largest gap {baseline['largest_gap_ms']:6.2f} ms, "
              f"retransmits {baseline['retransmits']}, echoes {baseline['received']}/{baseline['sent']}")
        print(f"  during {len(times)} re-applies:  largest gap {during['largest_gap_ms']:6.2f} ms, "
              f"retransmits {during['retransmits']}, echoes {during['received']}/{during['sent']}")
        print(f"  gap ratio during/baseline = {during['largest_gap_ms'] / baseline['largest_gap_ms']:.2f}")


if __name__ == "__main__":
    main()
