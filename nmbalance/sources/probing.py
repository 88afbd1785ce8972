"""Probe rounds on a schedule: one loop per probed uplink, every interval,
each round's outcome handed to a callback. Restarted as a whole when the
config changes (other targets, interval or pool size)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nmbalance.config.model import Config, Uplink
from nmbalance.core.health import Lost, Observation, Reply
from nmbalance.sources.probes import AnyAddress, Prober


class _Restart(Exception):
    """Raised inside the group to end it for a restart."""


class ProbeScheduler:
    def __init__(self, config: Callable[[], Config], source: Callable[[str], AnyAddress | None],
                 observe: Callable[[str, Observation], None], privileged: bool) -> None:
        self._config = config  # the current config, read at each (re)start
        self._source = source  # where an uplink's probes leave from now; None: skip the round
        self._observe = observe
        self._privileged = privileged
        self._restart = asyncio.Event()

    def restart(self) -> None:
        self._restart.set()

    async def run(self) -> None:
        while True:
            self._restart.clear()
            config = self._config()
            prober = Prober(max(sum(len(u.probe) for u in config.uplink), 4), self._privileged)
            try:
                async with asyncio.TaskGroup() as tg:
                    for u in config.uplink:
                        if u.probe:
                            tg.create_task(self._loop(config, u, prober))
                    tg.create_task(self._until_restart())
            except* _Restart:
                pass
            finally:
                prober.close()

    async def _until_restart(self) -> None:
        await self._restart.wait()
        raise _Restart

    async def _loop(self, config: Config, uplink: Uplink, prober: Prober) -> None:
        health = config.health
        interval = health.interval_ms / 1000
        timeout = health.round_timeout_ms / 1000
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            source = self._source(uplink.name)
            if source is not None:
                result = await prober.round(uplink.probe, source, timeout, health.reliability)
                self._observe(uplink.name,
                              Reply(result.rtt_ms or 0.0) if result.ok else Lost(result.detail))
            due += interval
            now = loop.time()
            if due < now:  # fell behind (a suspended machine): skip, don't burst
                due = now
            await asyncio.sleep(due - now)
