"""`nmbalance run`: the event-driven daemon (main.Daemon), its reconciler, its
bus session and what it asks of the kernel. run() assembles the real parts."""

from __future__ import annotations

import asyncio
import logging

from nmbalance.config.load import load_config
from nmbalance.daemon.main import Daemon
from nmbalance.errors import NmbalanceError

log = logging.getLogger(__name__)

__all__ = ["Daemon", "run"]


async def _serve(config_path: str) -> int:
    from nmbalance.daemon.kernel import LocalKernel
    from nmbalance.presence import AlreadyRunning, Presence
    from nmbalance.sources.kernel_watch import KernelWatch
    from nmbalance.sources.probes import Prober, unprivileged_icmp_allowed

    config = load_config(config_path)
    try:
        presence = Presence()
    except AlreadyRunning as exc:
        raise NmbalanceError(f"{exc}; stop it first") from None
    try:
        # Subscribed before the first snapshot, so no change falls in between.
        watch = KernelWatch(config.kernel.route_protocol, config.kernel.table)
        privileged = not unprivileged_icmp_allowed()
        log.info("probes use %s", "raw ICMP sockets" if privileged
                 else "unprivileged (datagram) ICMP sockets")
        daemon = Daemon(config_path, config, kernel=LocalKernel(), watch=watch,
                        prober=lambda workers: Prober(workers, privileged))
        async with asyncio.TaskGroup() as tg:
            served = tg.create_task(presence.serve())
            code = await daemon.run()
            served.cancel()
        return code
    finally:
        presence.close()


def run(config_path: str) -> int:
    return asyncio.run(_serve(config_path))
