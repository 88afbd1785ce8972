"""Discover, decide and apply once: `nmbalance apply` (and --dry-run) and the
dispatcher's fallback when no daemon runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nmbalance.config.model import Config
from nmbalance.config.snippets import read_snippets
from nmbalance.core.decide import decide
from nmbalance.core.facts import Facts
from nmbalance.core.managed import resolve_interfaces, with_managed
from nmbalance.core.numbering import layout_of
from nmbalance.core.plan import Plan
from nmbalance.errors import UsageError

if TYPE_CHECKING:  # imported when used: `check` and `--help` need no netlink libraries
    from pyroute2 import IPRoute

    from nmbalance.dataplane.apply import Applier, ApplyReport

log = logging.getLogger(__name__)


@contextmanager
def kernel(config: Config) -> Iterator[Applier]:
    """An Applier on a netlink socket of its own, closed afterwards."""
    from pyroute2 import IPRoute

    from nmbalance.dataplane.apply import Applier

    with IPRoute(strict_check=True) as ipr:
        applier = Applier(ipr, config.kernel.flush_conntrack)
        try:
            yield applier
        finally:
            applier.close()


def _selection(config: Config, uplinks: Sequence[str]) -> frozenset[str] | None:
    """The uplinks named, matched exactly or else, when that is unambiguous, whatever
    the case (Net-ISP-Balance's services are upper case: `apply cable` means CABLE)."""
    names = [u.name for u in config.uplink]
    chosen = []
    for asked in uplinks:
        found = [asked] if asked in names else [n for n in names if n.lower() == asked.lower()]
        if len(found) != 1:
            why = "ambiguous" if found else "unknown"
            raise UsageError(f"{why} uplink {asked} (configured: {', '.join(sorted(names))})")
        chosen.append(found[0])
    return frozenset(chosen) if chosen else None


def discover(ipr: IPRoute, config: Config) -> Facts:
    """The kernel's facts, with what NetworkManager or networkd say when one runs."""
    from nmbalance.sources.kernel_facts import snapshot
    from nmbalance.sources.managers import read_once

    managed = read_once()
    return with_managed(config, snapshot(ipr, config, resolve_interfaces(config, managed)), managed)


def run_hooks(config: Config, event: str, plan: Plan, config_path: str) -> None:
    """The pre-apply or post-apply hooks, as the daemon runs them (Net-ISP-Balance's
    pre-run and post-run scripts ran at every load_balance.pl)."""
    import asyncio

    from nmbalance.core.plan import UplinkStatus
    from nmbalance.publish.hooks import HookRunner

    hooks = HookRunner(config.daemon.hooks_dir, config.daemon.hook_timeout)
    if hooks.scripts(event):
        active = " ".join(u.name for u in plan.uplinks if u.status is UplinkStatus.ACTIVE)
        asyncio.run(hooks.run(event, {"ACTIVE_UPLINKS": active, "NMBALANCE_CONFIG": config_path}))


def observe(config: Config) -> tuple[Facts, Plan]:
    """What the kernel and the network managers say now, and the plan for it,
    keeping the uplink ids our table holds: for explain and doctor."""
    from nmbalance.daemon.kernel import restore_chains

    with kernel(config) as applier:
        ids = applier.kernel_ids(config.kernel.table, restore_chains(config), layout_of(config))
        facts = discover(applier.ipr, config)
    return facts, decide(config, facts, None, read_snippets(config), ids)


def plan_and_apply(config: Config, uplinks: Sequence[str] = (), dry_run: bool = False,
                   config_path: str = "") -> tuple[Plan, ApplyReport | None]:
    """The plan (with the uplink ids the kernel holds), applied unless dry_run, between
    the pre-apply and post-apply hooks. An uplink whose routes the kernel refuses is
    taken out and the rest applied: its status says error, with the kernel's reason."""
    from nmbalance.daemon.kernel import restore_chains
    from nmbalance.dataplane.apply import RoutesRefused, refused_uplinks

    selected = _selection(config, uplinks)
    snippets = read_snippets(config)
    with kernel(config) as applier:
        ids = applier.kernel_ids(config.kernel.table, restore_chains(config), layout_of(config))
        facts = discover(applier.ipr, config)
        refused: dict[str, str] = {}
        while True:
            plan = decide(config, facts, selected, snippets, ids, refused)
            for warning in plan.warnings:
                log.warning("%s", warning)
            if dry_run:
                return plan, None
            if not refused:
                run_hooks(config, "pre-apply", plan, config_path)
            try:
                report = applier.apply(plan)
            except RoutesRefused as exc:
                newly = refused_uplinks(plan, exc)
                if not newly.keys() - refused.keys():
                    raise
                refused |= newly
                continue
            run_hooks(config, "post-apply", plan, config_path)
            return plan, report
