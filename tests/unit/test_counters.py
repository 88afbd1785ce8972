"""Link byte counters from /proc/net/dev."""

from __future__ import annotations

from pathlib import Path

from nmbalance.sources.counters import read_counters

SAMPLE = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets ...
    lo:    6438      74    0    0    0     0          0         0     6438      74    0    0 0 0 0 0
  wan1: 18446744073709551615 9 0 0 0 0 0 0 12345 7 0 0 0 0 0 0
"""


def test_counters_are_read_per_interface(tmp_path: Path) -> None:
    path = tmp_path / "dev"
    path.write_text(SAMPLE)
    assert read_counters(path) == {"lo": (6438, 6438), "wan1": (2**64 - 1, 12345)}
    assert "lo" in read_counters()  # this process's own namespace
