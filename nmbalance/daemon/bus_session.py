"""The daemon's life on the system bus: connect, follow NetworkManager and
networkd, export our service; when the bus goes away, run on the kernel
alone and reconnect. The managers' last word survives the bus (ManagerWatch
outlives each connection), and a refused bus name leaves the daemon running
without its service while it keeps asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nmbalance.bus.client import close, connect, system_bus_address
from nmbalance.bus.compat import MessageBus
from nmbalance.bus.exported import Exported
from nmbalance.bus.service import Control
from nmbalance.config.model import Config
from nmbalance.core.facts import ManagedLink
from nmbalance.sources.managers import ManagerWatch

log = logging.getLogger(__name__)
RETRY = 2.0  # seconds between attempts to reach the bus, and between asks for our name


class BusSession:
    def __init__(self, control: Control, on_change: Callable[[str], object], *,
                 address: Callable[[], str | None] = system_bus_address,
                 connector: Callable[[str], Awaitable[MessageBus]] = connect,
                 retry: float = RETRY) -> None:
        self.control = control
        self.on_change = on_change
        self.address = address
        self.connector = connector
        self.retry = retry
        self.managers = ManagerWatch(self._manager_changed)
        self.bus: MessageBus | None = None
        self.exported: Exported | None = None
        self.named = False
        self._config: tuple[Config, str] | None = None

    def _manager_changed(self) -> None:
        self.on_change("a network manager changed")

    async def managed(self) -> dict[str, ManagedLink]:
        return await self.managers.current()

    @property
    def following(self) -> list[str]:
        return self.managers.following

    async def start(self, config: Config, config_path: str) -> None:
        """The first connection, before the first snapshot (subscribe first)."""
        self._config = (config, config_path)
        await self._connect(quiet=False)

    def sync(self, config: Config, config_path: str) -> None:
        """A reload: objects for the new uplinks."""
        self._config = (config, config_path)
        if self.exported is not None:
            self.exported.sync(config, config_path)

    async def _connect(self, quiet: bool) -> bool:
        address = self.address()
        if address is None:
            if not quiet:
                log.warning("no system bus: following the kernel alone, no D-Bus service")
            return False
        try:
            bus = await self.connector(address)
        except Exception as exc:  # whatever the bus library raises for a bus that isn't there
            if not quiet:
                log.warning("cannot connect to the system bus (%s): following the kernel alone, "
                            "no D-Bus service; retrying every %g s", exc, self.retry)
            return False
        try:
            await self.managers.attach(bus)  # subscribed before anything is read
            exported = Exported(bus, self.control)
            assert self._config is not None
            exported.export(*self._config)
        except Exception as exc:  # the bus went away again while we set up
            log.warning("setting up on the system bus failed (%s); retrying", exc)
            self.managers.detach()
            await close(bus)
            return False
        self.bus, self.exported = bus, exported
        await self._claim(quiet=False)
        return True

    async def _claim(self, quiet: bool) -> None:
        assert self.exported is not None
        try:
            refused = await self.exported.claim()
        except Exception as exc:  # the bus is going away: run() sees that next
            log.debug("asking for our bus name: %s", exc)
            return
        if refused is None:
            if not self.named and quiet:
                log.info("own %s on the system bus now", "io.github.nmbalance1")
            self.named = True
        elif not quiet:
            log.warning("%s: running without our D-Bus service, asking again every %g s",
                        refused, self.retry)

    async def run(self) -> None:
        """Keep a connection: wait for it to drop, then reconnect."""
        while True:
            if self.bus is not None:
                await self._serve(self.bus)
                log.warning("lost the system bus; following the kernel alone until it is back "
                            "(keeping what the network managers said last)")
                self.managers.detach()
                self.bus, self.exported, self.named = None, None, False
            await asyncio.sleep(self.retry)
            if await self._connect(quiet=True):
                log.info("connected to the system bus again")
                self.on_change("the system bus is back")

    async def _serve(self, bus: MessageBus) -> None:
        # Shielded: the library hands out one future; cancelling this task at
        # shutdown must not cancel it for close().
        gone = asyncio.ensure_future(asyncio.shield(bus.wait_for_disconnect()))  # type: ignore[no-untyped-call]
        try:
            while True:
                done, _ = await asyncio.wait({gone}, timeout=None if self.named else self.retry)
                if done:
                    with contextlib.suppress(Exception):  # however the library reports the loss
                        gone.result()
                    return
                await self._claim(quiet=True)
        finally:
            gone.cancel()

    async def close(self) -> None:
        if self.bus is not None:
            await close(self.bus)
            self.bus = None
