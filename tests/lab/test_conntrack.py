"""Dropping a dead uplink's conntrack entries in the background, in the router's
real conntrack table: only its mark goes, and one drop ends before the next
begins."""

from __future__ import annotations

import subprocess
import sys

from labkit.lab import ROOT, Lab

DROP = """
import socket, sys
from nmbalance.dataplane.conntrack import ConntrackCleaner
cleaner = ConntrackCleaner()
first = cleaner.drop_later([(frozenset({0x200}), 0xff00, socket.AF_INET)])
second = cleaner.drop_later([(frozenset({0x300}), 0xff00, socket.AF_INET)])
# The second was asked for only once the first was done.
print(first.done(), round(first.result(), 3) >= 0, round(second.result(), 3) >= 0)
cleaner.close()
"""


def _add(lab: Lab, count: int, mark: int) -> None:
    for i in range(count):
        lab.sh(lab.rtr, "conntrack", "-I", "-p", "udp", "-s", f"10.77.{mark >> 8}.{i + 1}",
               "-d", "198.51.100.53", "--sport", "40000", "--dport", "53", "-t", "600",
               "--mark", str(mark))


def _count(lab: Lab, mark: int) -> int:
    out = lab.sh(lab.rtr, "conntrack", "-L", "-s", f"10.77.{mark >> 8}.0/24", "--mark",
                 f"{mark}/{0xff00}", check=False).stdout
    return len(out.splitlines())


def test_background_drops_take_their_marks_only_and_in_order(lab: Lab) -> None:
    for mark in (0x100, 0x200, 0x300):
        _add(lab, 20, mark)
    assert [_count(lab, m) for m in (0x100, 0x200, 0x300)] == [20, 20, 20]
    done = subprocess.run(["ip", "netns", "exec", lab.rtr, sys.executable, "-c", DROP],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.split() == ["True", "True", "True"], done
    assert [_count(lab, m) for m in (0x100, 0x200, 0x300)] == [20, 0, 0]
