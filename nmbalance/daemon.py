"""`nmbalance run`: the event-driven daemon.

    netlink events ─┐
    probe rounds ───┼─▶ health monitor ─▶ dirty ─▶ debounced reconcile:
    timers, SIGHUP ─┘                              snapshot ▶ decide ▶ apply ▶ publish

Everything runs in one asyncio.TaskGroup. pyroute2, libnftables and the
conntrack socket are synchronous (and pyroute2 0.9's sync API cannot run
inside a running event loop), so the kernel side runs in one worker thread
that owns those objects; decide() and the health machines run on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv6Address
from typing import Any, ParamSpec, TypeVar

from nmbalance.bus.client import close, connect, system_bus_address
from nmbalance.bus.compat import DBusError, MessageBus
from nmbalance.bus.exported import Exported
from nmbalance.config.load import load_config
from nmbalance.config.model import Config
from nmbalance.config.snippets import read_snippets
from nmbalance.core.decide import decide
from nmbalance.core.facts import Facts
from nmbalance.core.health import Observation
from nmbalance.core.managed import resolve_interfaces, with_managed
from nmbalance.core.monitor import Change, HealthMonitor
from nmbalance.core.plan import Plan, UplinkStatus
from nmbalance.dataplane.apply import Applier, flush
from nmbalance.errors import ApplyError, ConfigError, ConfigErrors, NmbalanceError, UsageError
from nmbalance.publish.events import Event, EventQueue
from nmbalance.publish.sdnotify import Notifier
from nmbalance.sources.kernel import snapshot
from nmbalance.sources.managers import ManagerWatch
from nmbalance.sources.netlink import NetlinkWatch
from nmbalance.sources.probes import unprivileged_icmp_allowed
from nmbalance.sources.probing import ProbeScheduler

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
RETRY_AFTER_ERROR = 1.0
BUS_RETRY = 2.0


class _Stop(Exception):
    """Raised inside the TaskGroup to end it."""


class Daemon:
    def __init__(self, config_path: str, config: Config, *,
                 clock: Callable[[], float] = time.monotonic,
                 notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.monitor = HealthMonitor(config)
        self.snippets = read_snippets(config)
        self.facts: Facts | None = None
        self.plan: Plan | None = None
        # Where each uplink's probes leave from: set only while it has its own table.
        self.probe_source: dict[str, IPv4Address | IPv6Address | None] = {}
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._timers_changed = asyncio.Event()
        self.events = EventQueue(lambda: self.config, config_path, self.summary)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self._applier: Applier | None = None
        # One reconcile at a time: the reloader and the reconciler both run them.
        self._lock = asyncio.Lock()
        self.disabled: set[str] = set()  # administratively down (SetUplinkEnabled)
        self.bus: MessageBus | None = None
        self.managers: ManagerWatch | None = None
        self.exported: Exported | None = None

    # --- the kernel side, in its own thread ----------------------------------------------
    async def _kernel(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: fn(*args, **kwargs))

    # --- lifecycle -------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_bus_errors)
        # Subscribe before the first snapshot, so no change falls in between.
        watch = NetlinkWatch(self.config.kernel.route_protocol)
        await self._connect_bus()
        self._applier = await self._kernel(Applier, self.config.kernel.flush_conntrack)
        privileged = not unprivileged_icmp_allowed()
        log.info("probes use %s", "raw ICMP sockets" if privileged
                 else "unprivileged (datagram) ICMP sockets")
        self.probes = ProbeScheduler(lambda: self.config, lambda name: self.probe_source.get(name),
                                     self._probed, privileged)
        for signum, handler in ((signal.SIGTERM, self._stop.set), (signal.SIGINT, self._stop.set),
                                (signal.SIGHUP, self._reload.set)):
            loop.add_signal_handler(signum, handler)
        try:
            await self._reconcile()  # the first one fails loudly: exit 1 under systemd
            self.notifier.ready(self.summary())
            log.info("running: %s", self.summary())
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch_netlink(watch))
                tg.create_task(self._reconciler())
                tg.create_task(self.probes.run())
                tg.create_task(self._timers())
                tg.create_task(self.events.run())
                tg.create_task(self._reloader())
                tg.create_task(self._keep_bus())
                if self.notifier.watchdog_interval:
                    tg.create_task(self._watchdog(self.notifier.watchdog_interval))
                tg.create_task(self._until_stopped())
        except* _Stop:
            pass
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self.notifier.stopping()
            watch.close()
            if self.bus is not None:
                await close(self.bus)
            await self._shutdown()
        return 0

    async def _connect_bus(self, quiet: bool = False) -> bool:
        """NetworkManager/networkd and our own service; the daemon works without them."""
        address = system_bus_address()
        if address is None:
            if not quiet:
                log.warning("no system bus: following the kernel alone, no D-Bus service")
            return False
        try:
            bus = await connect(address)
        except Exception as exc:  # whatever the bus library raises for a bus that isn't there
            if not quiet:
                log.warning("cannot connect to the system bus (%s): following the kernel alone, "
                            "no D-Bus service", exc)
            return False
        self.bus = bus
        self.managers = ManagerWatch(bus, self._dirty.set)
        await self.managers.start()  # subscribed before the first snapshot
        self.exported = Exported(bus, self)
        await self.exported.start(self.config, self.config_path)
        return True

    async def _keep_bus(self) -> None:
        """Reconnect when the system bus goes away (dbus restarted) or was never there."""
        while True:
            if self.bus is not None:
                with contextlib.suppress(Exception):  # however the library reports the loss
                    # Shielded: the library hands out one future; cancelling this task
                    # at shutdown must not cancel it for close().
                    await asyncio.shield(self.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
                log.warning("lost the system bus; following the kernel alone until it is back")
                self.bus, self.managers, self.exported = None, None, None
            await asyncio.sleep(BUS_RETRY)
            try:
                if await self._connect_bus(quiet=True):
                    log.info("connected to the system bus again")
                    self._dirty.set()
            except NmbalanceError as exc:  # our name taken meanwhile
                log.error("%s", exc)
                if self.bus is not None:
                    await close(self.bus)
                self.bus, self.managers, self.exported = None, None, None

    async def _until_stopped(self) -> None:
        await self._stop.wait()
        raise _Stop

    async def _shutdown(self) -> None:
        applier = self._applier
        if self.config.daemon.on_stop == "flush":
            removed, changes = await self._kernel(
                flush, self.config.kernel.table, self.config.kernel.route_protocol)
            log.info("stopped; flushed table %s (%s) and %d routes/rules",
                     self.config.kernel.table, "removed" if removed else "absent",
                     len(changes.removed))
        else:
            log.info("stopped; the last applied state stays in place")
        if applier is not None:
            await self._kernel(applier.close)
        self._worker.shutdown(wait=True)

    def stop(self) -> None:
        self._stop.set()

    # --- facts in --------------------------------------------------------------------------
    async def _watch_netlink(self, watch: NetlinkWatch) -> None:
        async for change in watch.changes():
            log.debug("netlink: %s", change)
            self._dirty.set()

    def _probed(self, uplink: str, obs: Observation) -> None:
        changes = self.monitor.observe(uplink, obs, self.clock())
        self._record(changes)
        if not changes:
            self._publish()  # latency and loss

    async def _timers(self) -> None:
        while True:
            deadline = self.monitor.deadline()
            timeout = None if deadline is None else max(deadline - self.clock(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timers_changed.wait(), timeout)
            self._timers_changed.clear()
            self._record(self.monitor.tick(self.clock()))

    # --- health changes out ----------------------------------------------------------------
    def _record(self, changes: list[Change]) -> None:
        if not changes:
            return
        self._timers_changed.set()
        self._publish()
        for change in changes:
            level = logging.WARNING if change.transition.event in (
                "down", "long-down") else logging.INFO
            log.log(level, "%s", change.describe())
            if change.health_changed or change.transition.event == "long-down":
                self._queue_hooks(change)
            if change.health_changed:
                self._dirty.set()

    def _uplink_env(self, name: str) -> dict[str, str]:
        facts = self.facts.uplink(name) if self.facts else None
        plan = self.plan.uplink(name) if self.plan else None
        return {
            "UPLINK": name,
            "INTERFACE": (facts.interface if facts else None) or "",
            "GATEWAY": (plan.gateway if plan else None) or "",
            "GATEWAY_SOURCE": plan.gateway_source if plan else "",
            "ADDRESS": " ".join(str(a.ip) for a in facts.addresses
                                if not a.ip.is_link_local) if facts else "",
        }

    def _queue_hooks(self, change: Change) -> None:
        t = change.transition
        env = self._uplink_env(change.uplink) | {
            "STATE": t.phase.health.value,
            "PREVIOUS_STATE": t.previous.health.value,
            "REASON": t.reason,
        }
        self.events.put(Event(t.event, env, change.describe()))

    # --- reconcile -------------------------------------------------------------------------
    async def _reconciler(self) -> None:
        failed = False
        while True:
            debounce = self.config.daemon.debounce_ms / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), RETRY_AFTER_ERROR if failed else None)
            if debounce:
                await asyncio.sleep(debounce)
            self._dirty.clear()
            try:
                await self._reconcile()
                failed = False
            except Exception as exc:  # the daemon outlives a failed apply, and retries
                failed = True
                log.error("apply failed, retrying in %g s: %s", RETRY_AFTER_ERROR, exc,
                          exc_info=not isinstance(exc, ApplyError | OSError))
                if self._applier is not None:
                    self._applier.forget()

    async def _reconcile(self) -> None:
        async with self._lock:
            await self._reconcile_locked()

    async def _reconcile_locked(self) -> None:
        config = self.config
        managed = await self.managers.current() if self.managers is not None else {}
        interfaces = resolve_interfaces(config, managed)
        facts = with_managed(config, await self._kernel(snapshot, config, interfaces), managed)
        self.facts = facts
        self._record(self.monitor.observe_links(facts, self.clock()))
        selected = (frozenset(u.name for u in config.uplink) - self.disabled
                    if self.disabled else None)
        plan = decide(config, self.monitor.overlay(facts), selected, self.snippets)
        self.probe_source = {
            u.name: next((a.ip for a in facts.uplink(u.name).addresses if a.version == 4), None)
            if u.routed else None
            for u in plan.uplinks
        }
        if plan != self.plan:
            await self._apply(plan)
        self._publish()

    def _publish(self) -> None:
        if self.exported is not None:
            self.exported.publish(self.config, self.plan, self.facts, self.monitor.trackers,
                                  self.disabled, self.managers.following if self.managers else [],
                                  self.summary())

    async def _apply(self, plan: Plan) -> None:
        assert self._applier is not None
        previous = self.plan
        active = " ".join(u.name for u in plan.uplinks if u.status is UplinkStatus.ACTIVE)
        hooks = self.events.hooks()
        if hooks.scripts("pre-apply"):
            await hooks.run("pre-apply", {"ACTIVE_UPLINKS": active,
                                          "NMBALANCE_CONFIG": self.config_path})
        report = await self._kernel(self._applier.apply, plan)
        self.plan = plan
        for warning in plan.warnings:
            if previous is None or warning not in previous.warnings:
                log.warning("%s", warning)
        gone = [u.name for u in plan.uplinks if u.mark in report.conntrack_flushed]
        dropped = (f"; conntrack entries of {', '.join(gone)} dropped in "
                   f"{report.conntrack_ms:.1f} ms" if gone else "")
        log.info("applied (%s, %.1f ms): %s%s", report.nft_mode, report.kernel_ms,
                 self.summary(), dropped)
        self.notifier.status(self.summary())
        self.events.put(Event("post-apply", {"ACTIVE_UPLINKS": active}))

    def summary(self) -> str:
        if self.plan is None:
            return "starting"
        parts = []
        for u in self.plan.uplinks:
            share = f" {u.share:.0%}" if u.share else ""
            parts.append(f"{u.name} {u.status.value}{share}")
        return ", ".join(parts)

    # --- reload, watchdog ------------------------------------------------------------------
    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            self.notifier.reloading()
            with contextlib.suppress(ConfigError, ConfigErrors):
                await self.reload()
            self.notifier.ready(self.summary())

    async def reload(self) -> None:
        """Re-read the config; a bad one is logged, raised, and the running one kept."""
        try:
            config = load_config(self.config_path)
            snippets = read_snippets(config)
        except (ConfigError, ConfigErrors) as exc:
            log.error("reload refused, the running config stays: %s", exc)
            raise
        old = self.config
        async with self._lock:
            if config.kernel != old.kernel:
                # Another table name or numbering: remove what the old one installed.
                await self._kernel(flush, old.kernel.table, old.kernel.route_protocol)
                assert self._applier is not None
                self._applier.forget()
                self._applier.flush_conntrack = config.kernel.flush_conntrack
            self.config, self.snippets = config, snippets
            self.disabled &= {u.name for u in config.uplink}
            if self.exported is not None:
                self.exported.sync(config, self.config_path)
            self.monitor.configure(config)
            self.plan = None
            self.probes.restart()
            self._timers_changed.set()
            await self._reconcile_locked()
        log.info("reloaded %s", self.config_path)

    # --- what our D-Bus service may ask (bus.service.Control) --------------------------------
    async def set_uplink_enabled(self, name: str, enabled: bool) -> None:
        """Administrative up/down, like `nmbalance apply` with a list of uplinks."""
        names = [u.name for u in self.config.uplink]
        if name not in names:
            raise UsageError(f"no uplink named {name!r} (configured: {', '.join(names)})")
        if enabled == (name not in self.disabled):
            return
        (self.disabled.discard if enabled else self.disabled.add)(name)
        log.info("%s %s by request", name, "enabled" if enabled else "disabled")
        await self._reconcile()

    async def refresh(self, reason: str) -> None:
        log.info("refresh requested: %s", reason or "(no reason given)")
        if self.managers is not None:
            self.managers.invalidate()
        await self._reconcile()

    def plan_text(self) -> str:
        return self.plan.describe() if self.plan is not None else ""

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


def _quiet_bus_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """dbus-next re-raises, into the loop, the D-Bus errors its async methods
    already sent back to the caller: those are answers, not failures."""
    if isinstance(context.get("exception"), DBusError):
        return
    loop.default_exception_handler(context)


def run(config_path: str) -> int:
    config = load_config(config_path)
    return asyncio.run(Daemon(config_path, config).run())
