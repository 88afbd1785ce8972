"""`nmbalance status` from the kernel: what our table and routes say right now."""

from __future__ import annotations

from typing import Any

from nmbalance.config.model import Config
from nmbalance.core.decide import layout_of
from nmbalance.core.slots import SLOTS


def kernel_status(config: Config) -> dict[str, Any]:
    from pyroute2 import IPRoute

    from nmbalance.dataplane.nft import NftTable
    from nmbalance.dataplane.routing import owned_routes, owned_rules

    layout = layout_of(config)
    state = NftTable(config.kernel.table).read()
    with IPRoute() as ipr:
        routes = owned_routes(ipr, config.kernel.route_protocol)
        rules = owned_rules(ipr, config.kernel.route_protocol)
    slots: dict[str, int] = {}
    if state is not None:
        for elem in state.sets.get("w_default", []):
            key, verdict = elem if isinstance(elem, list) else (None, None)
            target = next(iter(verdict.values()))["target"] if verdict else ""
            lo, hi = key["range"] if isinstance(key, dict) and "range" in key else (key, key)
            ident = target.removeprefix("up_").removeprefix("learn_default_")
            slots[ident] = slots.get(ident, 0) + int(str(hi)) - int(str(lo)) + 1
    from nmbalance.core.decide import idents

    ident = idents([u.name for u in config.uplink])
    uplinks = []
    for i, u in enumerate(config.uplink):
        mark, table = layout.mark(i), layout.table(i)
        route = next((r for r in routes if r.table == table), None)
        uplinks.append({
            "name": u.name,
            "interface": route.interface if route and route.interface else u.interface,
            "mark": mark,
            "table": table,
            "gateway": route.gateway if route else None,
            "live": state is not None and mark in state.live,
            "share": slots.get(ident[u.name], 0) / SLOTS,
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
