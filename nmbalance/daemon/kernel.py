"""What the daemon asks of the kernel, and the real thing.

The daemon and its reconciler see only the Kernel protocol, so their unit
tests drive them with a kernel of plain values. LocalKernel runs everything
in one worker thread that owns the netlink socket, the libnftables contexts
and the conntrack socket: all three are synchronous, and pyroute2 0.9's sync
API cannot run inside a running event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, Protocol, TypeVar

from pyroute2 import IPRoute

from nmbalance.config.model import Config
from nmbalance.core.facts import Facts
from nmbalance.core.numbering import layout_of
from nmbalance.core.plan import Plan
from nmbalance.core.ruleset import ident, restore_chain
from nmbalance.dataplane.apply import Applier, ApplyReport, flush
from nmbalance.sources.counters import read_counters
from nmbalance.sources.kernel_facts import snapshot

P = ParamSpec("P")
R = TypeVar("R")


class Kernel(Protocol):
    async def snapshot(self, config: Config, interfaces: Mapping[str, str]) -> Facts: ...

    async def kernel_ids(self, config: Config) -> dict[str, int]:
        """The uplink ids our table holds now (by name), to keep them."""
        ...

    async def apply(self, plan: Plan, flush_conntrack: bool) -> ApplyReport:
        """Raises RoutesRefused (nothing of the nft table changed) or ApplyError."""
        ...

    async def drift(self, plan: Plan) -> list[str]:
        """How what we own differs from `plan`, one phrase each; [] when it doesn't."""
        ...

    async def counters(self) -> dict[str, tuple[int, int]]:
        """(rx bytes, tx bytes) by interface name."""
        ...

    async def new_connections(self, table: str) -> dict[str, int] | None:
        """Our table's named counters of new connections (name -> count)."""
        ...

    async def add_elements(self, table: str, text: str) -> None:
        """Run `add element` commands on our table (learned destinations)."""
        ...

    async def flush(self, table: str, route_protocol: int) -> int:
        """Remove our table, routes and rules; how many routes and rules went."""
        ...

    async def forget(self, full: bool = False) -> None:
        """Read everything again at the next apply; `full`: replace the whole table."""
        ...

    async def close(self) -> None: ...


def restore_chains(config: Config) -> dict[str, str]:
    """Each configured uplink's restore chain -> its name."""
    return {restore_chain(ident(u.name)): u.name for u in config.uplink}


class LocalKernel:
    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self._ipr: IPRoute | None = None
        self._applier: Applier | None = None

    async def _run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: fn(*args, **kwargs))

    def _open(self) -> Applier:
        if self._applier is None:
            # strict_check: the kernel filters route dumps by protocol for us.
            self._ipr = IPRoute(strict_check=True)
            self._applier = Applier(self._ipr, flush_in_background=True)
        return self._applier

    async def snapshot(self, config: Config, interfaces: Mapping[str, str]) -> Facts:
        return await self._run(lambda: snapshot(self._open().ipr, config, interfaces))

    async def kernel_ids(self, config: Config) -> dict[str, int]:
        return await self._run(lambda: self._open().kernel_ids(
            config.kernel.table, restore_chains(config), layout_of(config)))

    async def apply(self, plan: Plan, flush_conntrack: bool) -> ApplyReport:
        def go() -> ApplyReport:
            applier = self._open()
            applier.flush_conntrack = flush_conntrack
            return applier.apply(plan)
        return await self._run(go)

    async def drift(self, plan: Plan) -> list[str]:
        return await self._run(lambda: self._open().drift(plan))

    async def add_elements(self, table: str, text: str) -> None:
        await self._run(lambda: self._open().table(table).run(text))

    async def new_connections(self, table: str) -> dict[str, int] | None:
        return await self._run(lambda: self._open().table(table).read_counters())

    async def counters(self) -> dict[str, tuple[int, int]]:
        """Every link's (rx bytes, tx bytes), for the load of the adaptive methods:
        a file read of microseconds, done in the loop itself."""
        return read_counters()

    async def flush(self, table: str, route_protocol: int) -> int:
        def go() -> int:
            applier = self._open()
            applier.forget(full=True)
            return len(flush(applier.ipr, table, route_protocol)[1].removed)
        return await self._run(go)

    async def forget(self, full: bool = False) -> None:
        await self._run(lambda: self._open().forget(full))

    async def close(self) -> None:
        def go() -> None:
            if self._applier is not None:
                self._applier.close()
            if self._ipr is not None:
                self._ipr.close()
        await self._run(go)
        self._worker.shutdown(wait=True)
