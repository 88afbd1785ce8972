"""`nmbalance ARGS...`, held at the start line: its imports done, it waits for a
line on stdin, then runs. A test can then kill it inside the kernel window
rather than during Python's start-up.

With NMB_GATED_TRACE set, it prints to stderr where that window was, in
seconds after the line arrived: "window FIRST LAST" (from entering the
applier to leaving it), so a test can aim its kills.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import nmbalance.oneshot  # noqa: F401  (imported before the line, like the rest)
from nmbalance.cli import main
from nmbalance.dataplane.apply import Applier


def _traced(started: float) -> None:
    original = Applier.apply

    def apply(self: Applier, plan: Any) -> Any:
        entered = time.monotonic() - started
        try:
            return original(self, plan)
        finally:
            print(f"window {entered:.6f} {time.monotonic() - started:.6f}", file=sys.stderr,
                  flush=True)

    Applier.apply = apply  # type: ignore[method-assign]


if __name__ == "__main__":
    print("ready", flush=True)
    sys.stdin.readline()
    if os.environ.get("NMB_GATED_TRACE"):
        _traced(time.monotonic())
    sys.exit(main(sys.argv[1:]))
