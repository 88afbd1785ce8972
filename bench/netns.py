"""Benches that run in-process in a namespace of their own: the script runs
itself again there, with `--inside`, and the namespace goes when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rerun_inside(script: str, ns: str, batch: Sequence[str] = (), args: Sequence[str] = ()
                 ) -> None:
    """`script --inside ARGS` in a new namespace `ns`, built by `ip -batch` lines."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        if batch:
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch), text=True,
                           check=True)
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, script, "--inside", *args],
                       check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def uplinks_batch(n: int) -> list[str]:
    """A LAN and `n` uplinks, as `ip -batch` lines."""
    out = ["link set lo up", "link add lan0 type veth peer name lan0p",
           "addr add 10.250.0.1/24 dev lan0", "link set lan0 up", "link set lan0p up"]
    for i in range(1, n + 1):
        out += [f"link add wan{i} type veth peer name wan{i}p",
                f"addr add 10.{i}.0.2/24 dev wan{i}", f"link set wan{i} up", f"link set wan{i}p up"]
    return out
