"""`nmbalance status`: one shape (status.schema.json) whether the daemon
answers over D-Bus or the kernel is read. What a source cannot know is null,
never made up: without a config and a daemon, the uplinks are the ones our
table holds, by the names its chains carry."""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from typing import TYPE_CHECKING, Any

from nmbalance.config.model import Config, KernelSettings
from nmbalance.core.numbering import kernel_layout
from nmbalance.core.ruleset import (
    DEFAULT_GROUP,
    ident,
    learn_chain,
    new_counter,
    restore_chain,
    unident,
    up_chain,
)
from nmbalance.core.slots import SLOTS
from nmbalance.errors import NmbalanceError

if TYPE_CHECKING:  # read from the kernel only when asked
    from nmbalance.dataplane.nft import TableState

SCHEMA_VERSION = 1
STATES = ("active", "standby", "degraded", "left-out", "down", "no-gateway", "absent", "error")


def schema() -> dict[str, Any]:
    text = resources.files("nmbalance.report").joinpath("status.schema.json").read_text()
    result: dict[str, Any] = json.loads(text)
    return result


def _document(source: str, kernel: KernelSettings, installed: bool, **values: Any
              ) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": "nmbalance-status", "version": SCHEMA_VERSION,
                           "source": source, "table": kernel.table, "installed": installed,
                           "mode": None, "summary": "", "following": [], "choices": [],
                           "uplinks": [], "routes": [], "rules": []}
    doc.update(values)
    return doc


def _known(value: Any) -> Any:
    """The bus says -1 (a number) or "" (a string) for "not known"."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        return None
    return None if value == "" else value


def from_daemon(answer: dict[str, Any], kernel: KernelSettings, routing: dict[str, list[str]]
                ) -> dict[str, Any]:
    """The daemon's bus properties (bus.query) in the schema's words."""
    manager = answer["manager"]
    uplinks = []
    for u in answer["uplinks"]:
        uplinks.append(_row(u.get("Name", ""), None, **{
            "state": u.get("State") if u.get("State") in STATES else "down",
            "reason": u.get("Reason", "") if u.get("State") in STATES else "not applied yet",
            "health": u.get("Health") or None,
            "enabled": bool(u.get("Enabled", True)),
            "interface": _known(u.get("Interface", "")),
            "connection": _known(u.get("Connection", "")),
            "gateway": _known(u.get("Gateway", "")),
            "gateway_source": _known(u.get("GatewaySource", "")),
            "address": _known(u.get("Address", "")),
            "weight": float(u.get("Weight", 0.0)),
            "share": float(u.get("Share", 0.0)),
            "measured_share": _known(u.get("MeasuredShare", -1.0)),
            "new_connections": int(u.get("NewConnections", 0)),
            "latency_ms": _known(u.get("LatencyMs", -1.0)),
            "loss_percent": _known(u.get("LossPercent", -1.0)),
            "load_down_mbps": _known(u.get("LoadDownMbps", -1.0)),
            "load_up_mbps": _known(u.get("LoadUpMbps", -1.0)),
            "probing": list(u.get("Probing") or []),
            "mark": u.get("Mark") or None,
            "table": u.get("Table") or None,
            "address6": _known(u.get("Address6", "")),
            "gateway6": _known(u.get("Gateway6", "")),
            "gateway_source6": _known(u.get("GatewaySource6", "")),
            "state6": u.get("State6") if u.get("State6") in STATES else None,
            "reason6": u.get("Reason6", "") if u.get("State6") in STATES else None,
            "share6": float(u.get("Share6", 0.0)) if u.get("State6") in STATES else None,
        }))
    return _document("daemon", kernel, any(u["mark"] for u in uplinks),
                     mode=manager.get("Mode") or None, summary=manager.get("Summary", ""),
                     following=list(manager.get("Following") or []),
                     choices=list(manager.get("Choices") or []), uplinks=uplinks, **routing)


def from_kernel(config: Config | None, read: KernelRead) -> dict[str, Any]:
    """What our table, routes and rules say, with the config's names and weights
    when there is one."""
    kernel = config.kernel if config is not None else KernelSettings()
    layout = kernel_layout(kernel)
    state = read.table
    if state is None:
        names = [u.name for u in config.uplink] if config is not None else []
        uplinks = [_row(name, config, state="down",
                        reason=f"not applied: table inet {kernel.table} is not installed")
                   for name in names]
        return _document("kernel", kernel, False, mode=config.mode if config else None,
                         summary="not applied", uplinks=uplinks, **read.routing())
    prefix = restore_chain("")
    marks = {unident(chain.removeprefix(prefix)): mark for mark, chain in state.restore.items()
             if chain.startswith(prefix)}
    names = [u.name for u in config.uplink] if config is not None else sorted(
        marks, key=lambda n: marks[n])
    # The global mode's weight map: slots per uplink (up_X, or learn_default__X).
    slots: dict[str, int] = {}
    for lo, hi, chain in state.weights.get(f"w_{DEFAULT_GROUP}", []):
        for name in names:
            target = ident(name)
            if chain in (up_chain(target), learn_chain(DEFAULT_GROUP, target)):
                slots[name] = slots.get(name, 0) + hi - lo + 1
    counts = {name: state.counters.get(new_counter(ident(name))) for name in names}
    total = sum(c for c in counts.values() if c)
    uplinks = []
    for name in names:
        mark = marks.get(name)
        table = layout.table(layout.id_of_mark(mark)) if mark is not None else None
        route = read.default_route(table)
        share = slots.get(name, 0) / SLOTS
        live = mark is not None and mark in state.live
        if live:
            status, reason = ("active" if share > 0 else "standby"), ""
        else:
            status = "down"
            reason = ("not taking connections (no daemon to say why: down, left out, "
                      "without a gateway or absent)" if mark is not None
                      else f"not in table inet {kernel.table}")
        uplinks.append(_row(
            name, config, state=status, reason=reason, mark=mark,
            table=table if route else None,
            interface=route[0] if route else None, gateway=route[1] if route else None,
            gateway_source="nmbalance's route" if route and route[1] else None,
            address=read.source_address(table), share=share,
            new_connections=counts[name],
            measured_share=(counts[name] or 0) / total if total and counts[name] is not None
            else None))
    summary = ", ".join(f"{u['name']} {u['state']}" for u in uplinks)
    return _document("kernel", kernel, True, mode=config.mode if config else None,
                     summary=summary, uplinks=uplinks, **read.routing())


def _row(name: str, config: Config | None, **values: Any) -> dict[str, Any]:
    """An uplink's row: every field of the schema, from either source; what neither
    says is the config's (interface, connection, weight) or null."""
    configured = next((u for u in config.uplink if u.name == name), None) if config else None
    row: dict[str, Any] = {
        "name": name, "state": "down", "reason": "", "health": None, "enabled": None,
        "interface": configured.interface if configured else None,
        "connection": configured.connection if configured else None, "gateway": None,
        "gateway_source": None, "address": None,
        "weight": float(configured.weight) if configured else None, "share": 0.0,
        "measured_share": None, "new_connections": None, "latency_ms": None,
        "loss_percent": None, "load_down_mbps": None, "load_up_mbps": None, "probing": [],
        "mark": None, "table": None, "address6": None, "gateway6": None,
        "gateway_source6": None, "state6": None, "reason6": None, "share6": None}
    if values.get("interface") is None:
        values.pop("interface", None)  # the configured one, while the kernel shows none
    row.update(values)
    return row


class KernelRead:
    """Our table, routes and rules as the kernel holds them now (read-only)."""

    def __init__(self, kernel: KernelSettings) -> None:
        from pyroute2 import IPRoute

        from nmbalance.dataplane.routing import owned_routes, owned_rules

        self._name = kernel.table
        with IPRoute(strict_check=True) as ipr:
            self.routes = sorted(owned_routes(ipr, kernel.route_protocol))
            self.rules = sorted(owned_rules(ipr, kernel.route_protocol))

    @functools.cached_property
    def table(self) -> TableState | None:
        """Read only when asked: the daemon's answer needs the routes and rules alone
        (and `status --watch` asks every second)."""
        from nmbalance.dataplane.nft import NftTable

        return NftTable(self._name).read()

    def routing(self) -> dict[str, list[str]]:
        return {"routes": [r.describe() for r in self.routes],
                "rules": [r.describe() for r in self.rules]}

    def default_route(self, table: int | None) -> tuple[str | None, str | None] | None:
        """(device, gateway) of the default route in `table`; None without one."""
        route = next((r for r in self.routes if r.table == table and r.kind == "unicast"
                      and r.dst in ("0.0.0.0/0", "default")), None)
        return (route.interface, route.gateway) if route else None

    def source_address(self, table: int | None) -> str | None:
        """The uplink's address: the `from ADDR lookup TABLE` rule we installed."""
        rule = next((r for r in self.rules if r.table == table and r.src), None)
        return rule.src.removesuffix("/32") if rule and rule.src else None


def gather(config: Config | None) -> dict[str, Any]:
    """From the daemon when one answers on the bus, else from the kernel."""
    from nmbalance.bus.query import daemon_status

    kernel = config.kernel if config is not None else KernelSettings()
    answer = daemon_status()
    read = KernelRead(kernel)
    if answer is not None:
        return from_daemon(answer, kernel, read.routing())
    if read.table is None and os.geteuid() != 0:
        # nft lists nothing to others: "not installed" would be a guess.
        raise NmbalanceError("no daemon answers on the bus, and only root may read the "
                             f"kernel's table inet {kernel.table}: run as root")
    return from_kernel(config, read)
