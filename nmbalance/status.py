"""`nmbalance status` from the kernel: what our table and routes say right now."""

from __future__ import annotations

from typing import Any

from nmbalance.config.model import Config
from nmbalance.core.numbering import ids_in_kernel, layout_of
from nmbalance.core.ruleset import DEFAULT_GROUP, Group, ident, pick_target
from nmbalance.core.slots import SLOTS


def kernel_status(config: Config) -> dict[str, Any]:
    from pyroute2 import IPRoute

    from nmbalance.daemon.kernel import restore_chains
    from nmbalance.dataplane.nft import NftTable
    from nmbalance.dataplane.routing import owned_routes, owned_rules

    layout = layout_of(config)
    state = NftTable(config.kernel.table).read()
    with IPRoute(strict_check=True) as ipr:
        routes = owned_routes(ipr, config.kernel.route_protocol)
        rules = owned_rules(ipr, config.kernel.route_protocol)
    ids = ids_in_kernel(state.restore, restore_chains(config), layout) if state else {}
    # Which chain the default group's weight map sends each uplink's slots to.
    kind = "persistence" if config.mode == "persistence" else "weights"
    target = {pick_target(Group(DEFAULT_GROUP, kind, ()), ident(u.name)): u.name
              for u in config.uplink}
    slots: dict[str, int] = {}
    for lo, hi, chain in state.weights.get(f"w_{DEFAULT_GROUP}", []) if state else []:
        if chain in target:
            slots[target[chain]] = slots.get(target[chain], 0) + hi - lo + 1
    uplinks = []
    for u in config.uplink:
        uplink_id = ids.get(u.name)
        mark = layout.mark(uplink_id) if uplink_id else None
        table = layout.table(uplink_id) if uplink_id else None
        route = next((r for r in routes if r.table == table), None)
        uplinks.append({
            "name": u.name,
            "interface": route.interface if route and route.interface else u.interface,
            "mark": mark,
            "table": table,
            "gateway": route.gateway if route else None,
            "live": state is not None and mark in state.live,
            "share": slots.get(u.name, 0) / SLOTS,
        })
    return {
        "table": config.kernel.table,
        "installed": state is not None,
        "uplinks": uplinks,
        "rules": [r.describe() for r in sorted(rules)],
        "routes": [r.describe() for r in sorted(routes)],
    }


def render_status(status: dict[str, Any]) -> str:
    if not status["installed"]:
        return f"nmbalance: table inet {status['table']} is not installed\n"
    lines = [f"{'UPLINK':<16} {'STATE':<8} {'SHARE':>6}  {'DEVICE':<15} GATEWAY"]
    for u in status["uplinks"]:
        lines.append(
            f"{u['name']:<16} {'live' if u['live'] else 'out':<8} {u['share']:>6.1%}  "
            f"{u['interface'] or '-':<15} {u['gateway'] or '-'}"
        )
    return "\n".join(lines) + "\n"
