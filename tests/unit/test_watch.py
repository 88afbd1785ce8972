"""`status --watch` ends on Ctrl-C even when the interrupt lands inside a bus query."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
from typing import Any


def test_ctrl_c_inside_an_asyncio_query_that_swallows_cancellation_ends_the_watch() -> None:
    from nmbalance.report.watch import watch

    status = {"uplinks": [], "source": "kernel"}

    async def query() -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGINT)
        # What a library may do with the cancel asyncio.run's own handler sends.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.2)
        return status

    rounds: list[float] = []

    def sleep(seconds: float) -> None:
        rounds.append(seconds)
        assert len(rounds) < 5, "the watch went on after Ctrl-C"

    before = signal.getsignal(signal.SIGINT)
    assert watch(lambda: asyncio.run(query()), io.StringIO(), sleep=sleep) == 0
    assert rounds == []  # ended in the first query
    assert signal.getsignal(signal.SIGINT) is before
