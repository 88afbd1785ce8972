"""Watch a bus for a signal from one sender that mentions a value, and tell
when it came: the time a network manager announced a change."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from nmbalance.bus.client import add_match, close, connect, unwrap
from nmbalance.bus.compat import Message, MessageType


class SignalWatch:
    def __init__(self, address: str, sender: str, needle: str) -> None:
        self.address, self.sender, self.needle = address, sender, needle
        self.seen_at: float | None = None
        self._found = threading.Event()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        bus = await connect(self.address)

        def handler(msg: Message) -> None:
            if (self.seen_at is None and msg.message_type == MessageType.SIGNAL
                    and self.needle in repr(unwrap(msg.body))):
                self.seen_at = time.monotonic()
                self._found.set()

        bus.add_message_handler(handler)
        await add_match(bus, f"type='signal',sender='{self.sender}'")
        self._ready.set()
        await self._stop.wait()
        await close(bus)

    def __enter__(self) -> SignalWatch:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("signal watch did not connect")
        return self

    def wait(self, timeout: float) -> float:
        if not self._found.wait(timeout):
            raise AssertionError(f"no signal from {self.sender} mentioned {self.needle}")
        assert self.seen_at is not None
        return self.seen_at

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
