"""`nmbalance ARGS...` with the old routes removed only NMB_GATED_HOLD seconds
after the rest of an apply is done: the kernel stays half-switched (new routes
and table, old routes too) for long enough that a kill can land there, however
fast the rest of the apply is. For the kill -9 tests; labkit.gated uses it too.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from nmbalance.cli import main
from nmbalance.dataplane import routing


def hold_before_break(seconds: float) -> None:
    brk = routing.brk

    def held(*args: Any) -> Any:
        time.sleep(seconds)
        return brk(*args)

    routing.brk = held  # type: ignore[assignment]


if __name__ == "__main__":
    hold_before_break(float(os.environ.get("NMB_GATED_HOLD", "0")))
    sys.exit(main(sys.argv[1:]))
