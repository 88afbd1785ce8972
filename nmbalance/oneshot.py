"""Discover, decide and apply once: `nmbalance apply` and the dispatcher's fallback."""

from __future__ import annotations

import logging

from nmbalance.config.model import Config
from nmbalance.config.snippets import read_snippets
from nmbalance.core.decide import decide
from nmbalance.core.facts import Facts
from nmbalance.core.managed import resolve_interfaces, with_managed
from nmbalance.core.plan import Plan
from nmbalance.errors import UsageError

log = logging.getLogger(__name__)


def discover(config: Config) -> Facts:
    """The kernel's facts, with what NetworkManager or networkd say when one runs."""
    from nmbalance.sources.kernel import snapshot
    from nmbalance.sources.managers import read_once

    managed = read_once()
    return with_managed(config, snapshot(config, resolve_interfaces(config, managed)), managed)


def plan_once(config: Config, uplinks: list[str] | tuple[str, ...] = ()) -> Plan:
    names = {u.name for u in config.uplink}
    unknown = [n for n in uplinks if n not in names]
    if unknown:
        raise UsageError(f"unknown uplink {', '.join(unknown)} "
                         f"(configured: {', '.join(sorted(names))})")
    plan = decide(config, discover(config), frozenset(uplinks) if uplinks else None,
                  read_snippets(config))
    for warning in plan.warnings:
        log.warning("%s", warning)
    return plan
