"""asyncio helpers for what Python 3.11 gets wrong: a cancellation that lands in
the same instant as an awaited wake-up can be lost by asyncio.wait_for (it
returns the result instead) and by a TaskGroup aborting for a child's error.
The daemon stops by cancelling its tasks, so a lost one would hang SIGTERM."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Until `event` is set (True) or `timeout` seconds pass (False)."""
    if timeout is None:
        await event.wait()
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


def raise_if_cancelled() -> None:
    """Re-raise a cancellation of the current task that something swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
