"""`nmbalance ARGS...`, held at the start line: its imports done, it waits for a
line on stdin, then runs. A test can then kill it inside the kernel window
rather than during Python's start-up.

With NMB_GATED_TRACE set, it prints to stderr where that window was, in
seconds after the line arrived: "window FIRST LAST", from the first change
(routes added) to the last (routes removed), so a test can aim its kills.
With NMB_GATED_HOLD=SECONDS, it waits that long before the old routes are
removed (labkit.held).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import nmbalance.oneshot  # noqa: F401  (imported before the line, like the rest)
from labkit.held import hold_before_break
from nmbalance.cli import main
from nmbalance.dataplane import routing


def _traced(started: float) -> None:
    seen: dict[str, float] = {}
    make, brk = routing.make, routing.brk

    def first(*args: Any) -> Any:
        seen["first"] = time.monotonic() - started
        return make(*args)

    def last(*args: Any) -> Any:
        try:
            return brk(*args)
        finally:
            print(f"window {seen['first']:.6f} {time.monotonic() - started:.6f}",
                  file=sys.stderr, flush=True)

    routing.make, routing.brk = first, last  # type: ignore[assignment]


if __name__ == "__main__":
    print("ready", flush=True)
    sys.stdin.readline()
    if os.environ.get("NMB_GATED_HOLD"):
        hold_before_break(float(os.environ["NMB_GATED_HOLD"]))
    if os.environ.get("NMB_GATED_TRACE"):
        _traced(time.monotonic())
    sys.exit(main(sys.argv[1:]))
