"""`nmbalance run`: the wiring.

    kernel events ─┐                       ┌─▶ reconciler: observe ▶ decide ▶ apply,
    probe rounds ──┼─▶ health monitor ─────┤    read back, repair, retry
    bus, timers ───┘   (health changes)    └─▶ publish: D-Bus, hooks, mail, sd_notify

Everything runs in one asyncio.TaskGroup. The kernel (Kernel), the kernel's
events (Watch), the bus session, the probe sender and the clock are passed
in, so the daemon runs in unit tests with stand-ins as well as for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol

from nmbalance.aio import wait_event
from nmbalance.bus.compat import DBusError
from nmbalance.bus.exported import Figures, uplink_values
from nmbalance.config.load import load_config
from nmbalance.config.model import CAPACITY_METHODS, IPV6_BALANCED, Config
from nmbalance.config.snippets import read_snippets
from nmbalance.core.adaptive import (
    Counters,
    GroupState,
    Load,
    Meter,
    choose,
    measured_groups,
    metered,
)
from nmbalance.core.decide import decide, racing_groups
from nmbalance.core.decide6 import own_addresses
from nmbalance.core.facts import Facts, UplinkFacts
from nmbalance.core.health_machine import Observation
from nmbalance.core.health_monitor import HealthChange, HealthMonitor
from nmbalance.core.managed import resolve_interfaces, with_managed
from nmbalance.core.plan import Plan, UplinkStatus
from nmbalance.core.ruleset import (
    DEFAULT_GROUP,
    Group,
    ident,
    new_counter,
    sticky_set,
    sticky_timeouts,
)
from nmbalance.daemon.bus_session import BusSession
from nmbalance.daemon.kernel import Kernel
from nmbalance.daemon.reconciler import Reconciler
from nmbalance.daemon.stats import Stats
from nmbalance.dataplane.apply import ApplyReport
from nmbalance.errors import ConfigError, ConfigErrors, UsageError
from nmbalance.inet import AnyAddress
from nmbalance.publish.events import Event, EventQueue
from nmbalance.publish.metrics import Exporter, MetricsView, openmetrics
from nmbalance.publish.sdnotify import Notifier
from nmbalance.sources.counters import read_link_stats
from nmbalance.sources.kernel_watch import EventKind, KernelEvent
from nmbalance.sources.learner import Contender, Learner, open_log
from nmbalance.sources.probes import ProbeScheduler, ProbeTargets, RoundSender

log = logging.getLogger(__name__)


class Watch(Protocol):
    """The kernel's change events (sources.kernel_watch.KernelWatch, or a test's)."""

    own_proto: int

    def events(self) -> AsyncIterator[KernelEvent]: ...

    def watch_table(self, table: str) -> None: ...

    def close(self) -> None: ...


BusFactory = Callable[[Any, Callable[[str], object]], BusSession]


class _Stop(Exception):
    """Raised inside the TaskGroup to end it."""


class Daemon:
    def __init__(self, config_path: str, config: Config, *, kernel: Kernel, watch: Watch,
                 prober: Callable[[int], RoundSender], bus: BusFactory | None = BusSession,
                 clock: Callable[[], float] = time.monotonic,
                 notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.config = config
        self.kernel = kernel
        self.watch = watch
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.monitor = HealthMonitor(config)
        self.monitor6 = HealthMonitor(config, 6)  # tracks nothing while ipv6 = "off"
        self.snippets = read_snippets(config)
        self.facts: Facts | None = None
        self.plan: Plan | None = None
        self.ids: dict[str, int] = {}  # uplink ids by name, kept across reloads (core.numbering)
        # Where each uplink's probes leave from: set only while it has its own table.
        self.probe_source: dict[str, AnyAddress | None] = {}
        self.probe_source6: dict[str, AnyAddress | None] = {}  # ... and IPv6 probes
        self.disabled: set[str] = set()  # administratively down (SetUplinkEnabled)
        # The adaptive methods (core.adaptive): weights by group from the figures.
        # Per family: IPv6's choices are made among the uplinks live for IPv6, with
        # the round trips of the IPv6 probes.
        self.measured: dict[int, dict[str, dict[str, float]]] = {}
        self._meters: dict[str, Meter] = {}
        self._group_states: dict[int, dict[str, GroupState]] = {}
        self._choices: dict[str, str] = {}  # group label -> what its choice is (Choice.key)
        self.choice_why: dict[str, str] = {}  # group label -> the figures behind it
        self.learner: Learner | None = None  # fastest-response, once a group races
        self.stats = Stats()
        self.published: dict[str, dict[str, Any]] = {}  # each uplink's bus properties
        self.exporter: Exporter | None = None
        self.events = EventQueue(lambda: self.config, config_path, self.summary)
        self.reconciler = Reconciler(
            kernel, self, clock=clock,
            debounce=lambda: self.config.daemon.debounce_ms / 1000,
            verify_interval=lambda: self.config.daemon.verify_interval)
        self.bus = bus(self, self.reconciler.request) if bus is not None else None
        self.probe_targets = ProbeTargets(self.probe_source.get, self._uplink_facts, self._mark)
        self.probes = ProbeScheduler(lambda: self.config, self.probe_targets, self._probed,
                                     prober)
        self.probes6 = ProbeScheduler(
            lambda: self.config, ProbeTargets(self.probe_source6.get, self._uplink_facts,
                                              self._mark, family=6),
            self._probed6, prober)
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._timers_changed = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_bus_errors)
        if self.bus is not None:
            await self.bus.start(self.config, self.config_path)  # subscribed before any read
        try:
            self.ids = await self.kernel.kernel_ids(self.config)
        except Exception as exc:  # unreadable now: ids by config order, the kernel follows
            log.warning("could not read the uplink ids our table holds: %s", exc)
        for signum, handler in ((signal.SIGTERM, self._stop.set), (signal.SIGINT, self._stop.set),
                                (signal.SIGHUP, self._reload.set)):
            loop.add_signal_handler(signum, handler)
        metrics = self.config.metrics
        try:
            self.exporter = Exporter(metrics.listen, metrics.textfile)
        except OSError as exc:  # the address is taken or not ours: run without it
            log.error("cannot serve metrics on %s: %s", metrics.listen, exc)
            self.exporter = Exporter(None, metrics.textfile)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.reconciler.run())
                tg.create_task(self._announce())
                tg.create_task(self._follow_kernel())
                tg.create_task(self.probes.run())
                tg.create_task(self.probes6.run())
                tg.create_task(self._timers())
                tg.create_task(self._adapt())
                tg.create_task(self._learn())
                tg.create_task(self._sample())
                tg.create_task(self.events.run())
                tg.create_task(self._reloader())
                if self.bus is not None:
                    tg.create_task(self.bus.run())
                if self.notifier.watchdog_interval:
                    tg.create_task(self._watchdog(self.notifier.watchdog_interval))
                tg.create_task(self._until_stopped())
        except* _Stop:
            pass
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self.notifier.stopping()
            self.watch.close()
            if self.exporter is not None:
                self.exporter.close()
            if self.bus is not None:
                await self.bus.close()
            await self._shutdown()
        return 0

    async def _announce(self) -> None:
        """READY once the first round ended, whether it applied or failed (it is retried)."""
        with contextlib.suppress(Exception):
            await self.reconciler.wait(1)
        self.notifier.ready(self.summary())
        log.info("running: %s", self.summary())

    async def _until_stopped(self) -> None:
        await self._stop.wait()
        raise _Stop

    async def _shutdown(self) -> None:
        if self.config.daemon.on_stop == "flush":
            removed = await self.kernel.flush(self.config.kernel.table,
                                              self.config.kernel.route_protocol)
            log.info("stopped; removed table inet %s and %d routes/rules",
                     self.config.kernel.table, removed)
        else:
            log.info("stopped; the last applied state stays in place")
        await self.kernel.close()

    def stop(self) -> None:
        self._stop.set()

    # --- facts in --------------------------------------------------------------------------
    async def _follow_kernel(self) -> None:
        async for event in self.watch.events():
            log.debug("kernel: %s%s", event.describe(), " (ours)" if event.owned else "")
            if event.kind is EventKind.NFT:
                self.reconciler.repair(event.detail)
            elif event.kind in (EventKind.ROUTE, EventKind.RULE) and event.owned:
                self.reconciler.verify(f"our {event.describe()}")
            elif event.kind is EventKind.RULE:
                continue  # someone else's rule: nothing we read from it
            else:
                # A link cycled quickly can leave the plan as it was and our routes
                # gone with it: read back as well.
                self.reconciler.request(event.describe())
                self.reconciler.verify(event.describe())

    def _uplink_facts(self, name: str) -> UplinkFacts | None:
        return self.facts.uplink(name) if self.facts else None

    def _probed(self, uplink: str, obs: Observation) -> None:
        self.stats.probe_rounds[uplink] += 1
        changes = self.monitor.observe(uplink, obs, self.clock())
        self._record(changes)
        if not changes:
            self._publish()  # latency and loss

    def _probed6(self, uplink: str, obs: Observation) -> None:
        self._record(self.monitor6.observe(uplink, obs, self.clock()))

    async def _timers(self) -> None:
        while True:
            deadlines = [d for m in (self.monitor, self.monitor6)
                         if (d := m.deadline()) is not None]
            timeout = None if not deadlines else max(min(deadlines) - self.clock(), 0.0)
            await wait_event(self._timers_changed, timeout)
            self._timers_changed.clear()
            now = self.clock()
            self._record(self.monitor.tick(now) + self.monitor6.tick(now))

    # --- health changes out ----------------------------------------------------------------
    def _record(self, changes: list[HealthChange]) -> None:
        if not changes:
            return
        self._timers_changed.set()
        self._publish()
        for change in changes:
            if change.health_changed:
                self.stats.state_changes[change.uplink] += 1
            level = logging.WARNING if change.transition.event in (
                "down", "long-down") else logging.INFO
            log.log(level, "%s", change.describe())
            if change.health_changed or change.transition.event == "long-down":
                self._queue_hooks(change)
            if change.health_changed:
                self.reconciler.request(change.describe())

    def _uplink_env(self, name: str) -> dict[str, str]:
        facts = self.facts.uplink(name) if self.facts else None
        plan = self.plan.get(name) if self.plan else None
        return {
            "UPLINK": name,
            "INTERFACE": (facts.interface if facts else None) or "",
            "GATEWAY": (plan.gateway if plan else None) or "",
            "GATEWAY_SOURCE": plan.gateway_source if plan else "",
            "ADDRESS": " ".join(str(a.ip) for a in facts.addresses
                                if not a.ip.is_link_local) if facts else "",
        }

    def _queue_hooks(self, change: HealthChange) -> None:
        t = change.transition
        env = self._uplink_env(change.uplink) | {
            "FAMILY": str(change.family),
            "STATE": t.phase.health.value,
            "PREVIOUS_STATE": t.previous.health.value,
            "REASON": t.reason,
        }
        self.events.put(Event(t.event, env, change.describe()))

    # --- what the reconciler asks (reconciler.Planner) --------------------------------------
    @property
    def flush_conntrack(self) -> bool:
        return self.config.kernel.flush_conntrack

    async def observe(self) -> Facts:
        config = self.config
        managed = await self.bus.managed() if self.bus is not None else {}
        interfaces = resolve_interfaces(config, managed)
        facts = with_managed(config, await self.kernel.snapshot(config, interfaces), managed)
        self.facts = facts
        now = self.clock()
        self._record(self.monitor.observe_links(facts, now)
                     + self.monitor6.observe_links(facts, now))
        return facts

    def decide(self, facts: Facts, refused: Mapping[str, str]) -> Plan:
        names = frozenset(u.name for u in self.config.uplink)
        # fastest-response groups learn while the daemon runs: their weights are only
        # for the first connection to a destination, not a stand-in.
        learning: dict[str, dict[str, float]] = {key: {} for key in racing_groups(self.config)}
        return decide(self.config, self.monitor6.overlay(self.monitor.overlay(facts)),
                      names - self.disabled if self.disabled else None, self.snippets,
                      self.ids, refused, learning | self.measured.get(4, {}),
                      learning | self.measured.get(6, {}))

    async def before_apply(self, plan: Plan) -> None:
        hooks = self.events.hooks()
        if not _shares_only(self.plan, plan) and hooks.scripts("pre-apply"):
            await hooks.run("pre-apply", {"ACTIVE_UPLINKS": _active(plan),
                                          "NMBALANCE_CONFIG": self.config_path})

    def applied(self, plan: Plan, report: ApplyReport, why: str, quiet: bool = False) -> None:
        self.stats.applied(report.kernel_ms)
        previous, self.plan = self.plan, plan
        self.ids = {u.name: u.id for u in plan.uplinks}
        facts = self.facts
        for sources, version in ((self.probe_source, 4), (self.probe_source6, 6)):
            sources.clear()
            sources.update({
                u.name: next(iter(own_addresses(facts.uplink(u.name), version)), None)
                for u in plan.uplinks
                if (u.routed if version == 4 else u.routed6) and facts is not None
            })
        for warning in plan.warnings:
            if previous is None or warning not in previous.warnings:
                log.warning("%s", warning)
        gone = [u.name for u in plan.uplinks if u.mark in report.conntrack_flushed]
        gone += [f"{u.name} IPv6" for u in plan.uplinks if u.mark in report.conntrack_flushed6]
        names = ", ".join(gone)
        background = report.conntrack_done if gone else None  # the drop still under way
        if background is not None:
            dropped = f"; dropping conntrack entries of {names}"
        elif gone:
            dropped = f"; conntrack entries of {names} dropped in {report.conntrack_ms:.1f} ms"
        else:
            dropped = ""
        shares_only = _shares_only(previous, plan)
        if quiet:
            pass  # the reconciler says what it repaired
        elif shares_only:  # the measured methods retune shares often: not news
            log.debug("shares retuned (%.1f ms) after %s: %s", report.kernel_ms, why,
                      self.summary())
        elif what := _changed(report):
            log.info("applied (%s, %.1f ms) after %s: %s%s", what, report.kernel_ms, why,
                     self.summary(), dropped)
        else:
            log.debug("nothing to change in the kernel after %s: %s", why, self.summary())
        if background is not None:
            # After the line above, though the drop may be done already.
            background.add_done_callback(lambda done: _say_dropped(names, done))
        self.notifier.status(self.summary())
        if not shares_only:
            self.events.put(Event("post-apply", {"ACTIVE_UPLINKS": _active(plan)}))
        self._publish()

    async def _adapt(self) -> None:
        """Every SAMPLE_INTERVAL, while a group's method is measured: the uplinks'
        load and latency to weights; a reconcile only when the weights moved."""
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            try:
                await self._measure()
            except Exception as exc:  # never the daemon's end: the choice stands
                log.warning("measuring for the adaptive methods failed: %s", exc)

    async def _measure(self) -> None:
        config, plan = self.config, self.plan
        groups = measured_groups(config)
        if not groups or plan is None:
            self.measured, self._choices, self.choice_why = {}, {}, {}
            return
        now = self.clock()
        loads: dict[str, Load] = {}
        if any(method in CAPACITY_METHODS for _, method, _ in groups):
            try:
                counters = await self.kernel.counters()
            except Exception as exc:  # a sample missed: the choice stands until the next
                log.debug("link counters unreadable: %s", exc)
                return
            for u in plan.uplinks:
                if u.interface in counters:
                    rx, tx = counters[u.interface]
                    meter = metered(self._meters.get(u.name, Meter()), Counters(rx, tx, now))
                    self._meters[u.name] = meter
                    if meter.load is not None:
                        loads[u.name] = meter.load
        families = [(4, self.monitor)]
        if config.ipv6 in IPV6_BALANCED:
            families.append((6, self.monitor6))
        measured: dict[int, dict[str, dict[str, float]]] = {}
        why: list[str] = []
        for family, monitor in families:
            latencies = {name: t.smoothed_ms for name, t in monitor.trackers.items()
                         if t.smoothed_ms is not None}
            usable = {u.name for u in plan.uplinks
                      if (status := u.status_in(family)) and status.usable}
            choices, self._group_states[family] = choose(
                config, usable, loads, latencies, self._group_states.get(family, {}), now)
            measured[family] = {gid: c.weights for gid, c in choices.items() if c.measured}
            for gid, c in choices.items():
                label = _group_label(gid) + (" IPv6" if family == 6 else "")
                if self._choices.get(label) != c.key:
                    log.info("%s: %s", label, c.why)
                self._choices[label] = c.key
                self.choice_why[label] = c.why
                why.append(f"{label}: {c.why}")
        if {f: _shares(m) for f, m in measured.items()} != {
                f: _shares(m) for f, m in self.measured.items()}:
            self.measured = measured
            self.reconciler.request("measurements: " + "; ".join(why))

    async def _learn(self) -> None:
        """fastest-response: from the first group that races, read new destinations
        and race them (sources.learner); the winners join their uplink's set."""
        while not racing_groups(self.config):
            await asyncio.sleep(1.0)
        try:
            sock = open_log(self.config.kernel.learn_log_group)
        except OSError as exc:
            log.warning("fastest-response cannot read new destinations (NFLOG group %d): %s;"
                        " it uses the weights", self.config.kernel.learn_log_group, exc)
            return
        self.learner = Learner(self._contenders, self._add_learned)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.learner.read(sock))
                tg.create_task(self.learner.run())
        except* Exception as group:  # never the daemon's end: the weights decide
            log.warning("fastest-response stopped learning: %s",
                        "; ".join(str(e) for e in group.exceptions))
        finally:
            sock.close()

    def _groups(self) -> tuple[Group, ...]:
        return self.plan.nft.spec.groups if self.plan is not None else ()

    def _contenders(self, group: str, family: int) -> list[Contender]:
        """The uplinks of a group live in `family`, with where their races leave from."""
        plan = self.plan
        found = next((g for g in self._groups() if g.ident == group), None)
        if plan is None or found is None:
            return []
        sources = self.probe_source if family == 4 else self.probe_source6
        out = []
        for u in plan.uplinks:
            status = u.status_in(family)
            source = sources.get(u.name)
            if (u.ident in found.uplinks and status is not None and status.usable
                    and source is not None and source.version == family):
                out.append(Contender(u.ident, source, u.mark))
        return out

    async def _add_learned(self, won: Mapping[str, Mapping[str, list[AnyAddress]]]) -> None:
        plan = self.plan
        if plan is None or not won:
            return
        timeouts = sticky_timeouts(plan.nft.spec)
        lines = []
        for group, by_uplink in won.items():
            for uplink_ident, addresses in by_uplink.items():
                for family in (4, 6):
                    name = sticky_set(group, uplink_ident, family)
                    mine = [a for a in addresses if a.version == family]
                    if name in timeouts and mine:
                        items = ", ".join(f"{a} timeout {timeouts[name]}s" for a in mine)
                        lines.append(f"add element inet {plan.nft.table} {name} {{ {items} }}")
        if lines:
            await self.kernel.add_elements(plan.nft.table, "\n".join(lines) + "\n")
            log.debug("learned %d destinations", sum(len(a) for b in won.values()
                                                     for a in b.values()))

    async def _sample(self) -> None:
        """Every STATS_INTERVAL: the new connections each uplink took (our table's
        counters), for the share measured; the metrics' view; the textfile."""
        written = -1e9
        while True:
            try:
                raw = await self.kernel.new_connections(self.config.kernel.table)
                names = {new_counter(ident(u.name)): u.name for u in self.config.uplink}
                self.stats.new_connections.sample(self.clock(), {
                    names[c]: n for c, n in (raw or {}).items() if c in names})
                self._publish()
                if self.exporter is not None:
                    self.exporter.view = self.metrics_view()
                    if self.clock() - written >= self.config.metrics.textfile_interval:
                        self.exporter.write()
                        written = self.clock()
            except Exception as exc:  # figures are never the daemon's end
                log.warning("sampling the counters failed: %s", exc)
            await asyncio.sleep(STATS_INTERVAL)

    def metrics_view(self) -> MetricsView:
        return MetricsView(
            uplinks=dict(self.published), links=read_link_stats(),
            state_changes=dict(self.stats.state_changes),
            probe_rounds=dict(self.stats.probe_rounds), applies=self.stats.applies,
            apply_seconds=self.stats.apply_seconds, repairs=self.reconciler.repairs,
            raced=self.learner.raced if self.learner else 0,
            learned=self.learner.learned if self.learner else 0)

    def metrics_text(self) -> str:
        return openmetrics(self.metrics_view())

    def figures(self) -> Figures:
        return Figures(
            new_connections=dict(self.stats.new_connections.totals),
            measured_share=self.stats.new_connections.shares(),
            probing=self.probe_targets.shown(self.config),
            loads={n: m.load for n, m in self._meters.items() if m.load is not None},
            choices=dict(self.choice_why) | (
                {"fastest-response": f"{self.learner.raced} destinations raced, "
                                     f"{self.learner.learned} learned"}
                if self.learner is not None else {}))

    def _mark(self, uplink: str) -> int:
        found = self.plan.get(uplink) if self.plan is not None else None
        return found.mark if found is not None else 0

    def _publish(self) -> None:
        figures = self.figures()
        self.published = uplink_values(self.config, self.plan, self.facts, self.monitor,
                                       self.disabled, figures, self.monitor6)
        exported = self.bus.exported if self.bus is not None else None
        if exported is not None:
            exported.publish(self.summary(), self.bus.following if self.bus else [],
                             figures.choices, self.published)

    def summary(self) -> str:
        if self.plan is None:
            error = self.reconciler.last_error
            return f"not applied: {error}" if error else "starting"
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
                await self.reload(wait=False)
            self.notifier.ready(self.summary())

    async def reload(self, wait: bool = True) -> None:
        """Re-read the config; a bad one is logged, raised, and the running one kept."""
        try:
            config = load_config(self.config_path)
            snippets = read_snippets(config)
        except (ConfigError, ConfigErrors) as exc:
            log.error("reload refused, the running config stays: %s", exc)
            raise
        old = self.config
        if (config.kernel.table, config.kernel.route_protocol) != (
                old.kernel.table, old.kernel.route_protocol):
            self.reconciler.flush_first(old.kernel.table, old.kernel.route_protocol)
        self.config, self.snippets = config, snippets
        self.disabled &= {u.name for u in config.uplink}
        self.watch.own_proto = config.kernel.route_protocol
        self.watch.watch_table(config.kernel.table)
        if self.bus is not None:
            self.bus.sync(config, self.config_path)
        self.monitor.configure(config)
        self.monitor6.configure(config)
        self.probes.restart()
        self.probes6.restart()
        self._timers_changed.set()
        log.info("reloaded %s: %d uplinks, mode %s", self.config_path, len(config.uplink),
                 config.mode)
        generation = self.reconciler.request("reload")
        if wait:
            await self.reconciler.wait(generation)

    # --- what our D-Bus service may ask (bus.service.Control) ------------------------------
    async def set_uplink_enabled(self, name: str, enabled: bool) -> None:
        """Administrative up/down, like `nmbalance apply` with a list of uplinks."""
        names = [u.name for u in self.config.uplink]
        if name not in names:
            raise UsageError(f"no uplink named {name!r} (configured: {', '.join(names)})")
        if enabled == (name not in self.disabled):
            return
        (self.disabled.discard if enabled else self.disabled.add)(name)
        cause = f"{name} {'enabled' if enabled else 'disabled'} by request"
        log.info("%s", cause)
        await self.reconciler.wait(self.reconciler.request(cause))

    async def refresh(self, reason: str) -> None:
        """A dispatcher's nudge: re-read the managers and reconcile; returns at once."""
        log.info("refresh requested: %s", reason or "(no reason given)")
        if self.bus is not None:
            self.bus.managers.invalidate()
        self.reconciler.request(f"refresh ({reason or 'no reason given'})")

    def plan_text(self) -> str:
        return self.plan.describe() if self.plan is not None else ""

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


def _say_dropped(names: str, done: Future[float]) -> None:
    """The log line of drops done in the background (from their thread)."""
    error = done.exception()
    if error is not None:
        log.warning("conntrack entries of %s not dropped: %s", names, error)
    else:
        log.info("conntrack entries of %s dropped in %.1f ms", names, done.result())


def _changed(report: ApplyReport) -> str:
    """What an apply changed in the kernel: "full", "contents", "routes", "conntrack"."""
    parts = [report.nft_mode] if report.nft_mode else []
    if report.routing.added or report.routing.removed:
        parts.append("routes")
    if report.conntrack_flushed or report.conntrack_flushed6:
        parts.append("conntrack")
    return ", ".join(parts)


SAMPLE_INTERVAL = 0.5  # seconds between load samples of the adaptive methods
STATS_INTERVAL = 5.0  # seconds between samples of the new-connection counters (and metrics)


def _group_label(gid: str) -> str:
    """"mode" for the global method, "rule NAME" for a [[rule]]'s group ("R" + ident)."""
    return "mode" if gid == DEFAULT_GROUP else f"rule {gid.removeprefix('R')}"


def _shares_only(previous: Plan | None, plan: Plan) -> bool:
    """Whether `plan` differs from `previous` in nothing but the shares the measured
    methods retune: same table, routes, rules, uplink states and reasons, and the
    same configured weights (a reload that changes them is news; no hooks otherwise)."""
    def states(p: Plan) -> list[tuple[str, UplinkStatus, str, float]]:
        return [(u.name, u.status, u.reason, u.weight) for u in p.uplinks]
    return previous is not None and previous.nft.digest == plan.nft.digest \
        and previous.routes == plan.routes and previous.rules == plan.rules \
        and states(previous) == states(plan)


def _shares(measured: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, int]]:
    """Weights as whole per-mille shares: what the slot maps can tell apart, so
    figures that wobble in the last digit do not rewrite them."""
    out = {}
    for gid, weights in measured.items():
        total = sum(weights.values()) or 1.0
        out[gid] = {n: round(1000 * w / total) for n, w in weights.items()}
    return out


def _active(plan: Plan) -> str:
    return " ".join(u.name for u in plan.uplinks if u.status is UplinkStatus.ACTIVE)


def _quiet_bus_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """dbus-next re-raises, into the loop, the D-Bus errors its async methods
    already sent back to the caller: those are answers, not failures."""
    if isinstance(context.get("exception"), DBusError):
        return
    loop.default_exception_handler(context)
