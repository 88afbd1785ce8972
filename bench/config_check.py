"""How long `check` takes on crafted 1 MB configs, against tomllib alone parsing
a well-formed file of the same size (the floor any TOML loader pays), in the
same run, pairwise over interleaved repeats. Target: under 2 s each.

No root needed: it runs `nmbalance check` as a user would, in a subprocess.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5

UPLINK = '[[uplink]]\nname = "A"\ninterface = "wan1"\n'
CRAFTED = {
    "long string of escapes": UPLINK + 'connection = "' + "\\u00e9" * 170_000 + '"\n',
    "brackets in a comment": UPLINK + "# " + "[" * 1_000_000 + "\n",
    "escaped quotes in a multi-line string": UPLINK + 'x = """' + '\\"' * 500_000 + '"""\n',
    "80,000 bad probe targets": UPLINK + "probe = [" + ", ".join(['"not-an-ip"'] * 80_000) + "]\n",
    "balance.conf option of 1 MB spaces": "ISP1 wan1 isp 192.0.2.1\nmode=" + " " * 500_000
                                          + "x" + " " * 500_000 + "y\n",
    "25,000 uplinks": "".join(f'[[uplink]]\nname = "U{i}"\ninterface = "w{i % 9999}"\n'
                               for i in range(25_000)),
}
PLAIN = UPLINK + "".join(f"# comment line {i:08d} padding padding padding\n"
                         for i in range(20_000))


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, capture_output=True, env={"PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, text in {"plain": PLAIN, **CRAFTED}.items():
            path = Path(tmp) / (("balance.conf" if "balance" in name else "x") + f"-{len(files)}")
            path.write_text(text)
            files[name] = path
        plain = str(files["plain"])
        baseline = [sys.executable, "-c", f"import tomllib; tomllib.loads(open({plain!r}).read())"]
        print(f"`nmbalance check` on crafted ~1 MB files, {REPEATS} interleaved repeats; baseline: "
              f"tomllib alone on a plain {files['plain'].stat().st_size // 1000} kB file")
        for name, path in files.items():
            if name == "plain":
                continue
            pairs = []
            for _ in range(REPEATS):
                base = timed(baseline)
                ours = timed([sys.executable, "-m", "nmbalance", "check", "-c", str(path)])
                pairs.append((ours, base))
            median = statistics.median(o for o, _ in pairs)
            ratio = statistics.median(o / b for o, b in pairs)
            print(f"  {name:<40} {path.stat().st_size / 1e6:4.2f} MB: check {median:5.2f} s "
                  f"(max {max(o for o, _ in pairs):4.2f} s; target 2 s), {ratio:5.1f}x the baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
