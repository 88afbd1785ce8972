"""Keep our exported objects in step with the daemon: one Uplink object per
configured uplink, and their properties from the last plan and health."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

from nmbalance.bus.compat import DBusError, MessageBus, NameFlag, RequestNameReply
from nmbalance.bus.service import (
    BUS_NAME,
    MANAGER_PATH,
    Control,
    ManagerInterface,
    UplinkInterface,
    uplink_path,
)
from nmbalance.config.model import Config
from nmbalance.core.adaptive import Load
from nmbalance.core.facts import Facts
from nmbalance.core.health_monitor import HealthMonitor
from nmbalance.core.plan import Plan, UplinkStatus


@dataclass(frozen=True)
class Figures:
    """What the daemon measured, beside the plan and health."""

    probing: Mapping[str, list[str]] = field(default_factory=dict)  # uplink -> targets
    loads: Mapping[str, Load] = field(default_factory=dict)
    choices: Mapping[str, str] = field(default_factory=dict)  # "mode"/"rule X" -> why
    new_connections: Mapping[str, int] = field(default_factory=dict)  # uplink -> since start
    measured_share: Mapping[str, float] = field(default_factory=dict)  # of the last minute


class Exported:
    def __init__(self, bus: MessageBus, control: Control) -> None:
        self.bus = bus
        self.manager = ManagerInterface(control)
        self.uplinks: dict[str, UplinkInterface] = {}

    def export(self, config: Config, config_path: str) -> None:
        self.bus.export(MANAGER_PATH, self.manager)
        self.sync(config, config_path)

    async def claim(self) -> str | None:
        """Ask for our bus name; None when we own it, else why not."""
        try:
            reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except DBusError as exc:  # the bus's policy says no
            return f"the bus refused {BUS_NAME}: {exc.text}"
        if reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            return None
        return f"{BUS_NAME} is owned by another process (another nmbalance daemon?)"

    def sync(self, config: Config, config_path: str) -> None:
        """Objects for the configured uplinks: new ones exported, gone ones withdrawn."""
        names = [u.name for u in config.uplink]
        for name in list(self.uplinks):
            if name not in names:
                self.bus.unexport(uplink_path(name), self.uplinks.pop(name))
        for name in names:
            if name not in self.uplinks:
                self.uplinks[name] = UplinkInterface(name)
                self.bus.export(uplink_path(name), self.uplinks[name])
        self.manager.update(Mode=config.mode, ConfigPath=config_path,
                            Uplinks=[uplink_path(n) for n in names])

    def publish(self, summary: str, following: list[str], choices: Mapping[str, str],
                values: Mapping[str, Mapping[str, Any]]) -> None:
        self.manager.update(Summary=summary, Following=following,
                            Choices=[f"{group}: {why}" for group, why in choices.items()])
        for name, props in values.items():
            obj = self.uplinks.get(name)
            if obj is not None:
                obj.update(**props)


def _state(status: UplinkStatus | None, health: str) -> str:
    """A plan's status in the bus's words: an active uplink whose probes say it is
    degraded says so."""
    state = status.value if status is not None else ""
    return "degraded" if state == UplinkStatus.ACTIVE.value and health == "degraded" else state


def uplink_values(config: Config, plan: Plan | None, facts: Facts | None,
                  monitor: HealthMonitor, disabled: set[str], figures: Figures,
                  monitor6: HealthMonitor | None = None) -> dict[str, dict[str, Any]]:
    """Each uplink's properties as the bus shows them (and the metrics count them)."""
    out = {}
    for u in config.uplink:
        tracker6 = monitor6.trackers.get(u.name) if monitor6 is not None else None
        tracker = monitor.trackers.get(u.name)
        up = plan.get(u.name) if plan is not None else None
        f = facts.uplink(u.name) if facts is not None else None
        address = next((str(a.ip) for a in (f.addresses if f else ())
                        if isinstance(a, IPv4Interface) and not a.ip.is_link_local), "")
        address6 = next((str(a.ip) for a in (f.addresses if f else ())
                         if isinstance(a, IPv6Interface) and not a.ip.is_link_local), "")
        loss = monitor.loss(u.name)  # the figure health judges by
        health = tracker.phase.value if tracker else ""
        state = _state(up.status if up else None, health)
        reason = up.reason if up and up.reason else (
            tracker.reason if tracker and health != "up" else "")
        if u.name in disabled and state == UplinkStatus.LEFT_OUT.value:
            reason = "left out by request (nmbalance disable; enable takes it back)"
        load = figures.loads.get(u.name)
        # The plan's under nat66 (a configured one included), else what the facts found.
        gateway6 = ((up.gateway6, up.gateway6_source) if up and up.gateway6
                    else (str(f.gateway6), f.gateway6_source.value) if f and f.gateway6
                    else ("", ""))
        out[u.name] = {
            "State": state,
            "Health": health,
            "Reason": reason,
            "Enabled": u.name not in disabled,
            "Interface": (up.interface if up else None) or "",
            "Connection": u.connection or "",
            "Gateway": (up.gateway if up else None) or "",
            "GatewaySource": up.gateway_source if up else "",
            "Address": address,
            "Weight": float(u.weight),
            "Share": round(up.share, 4) if up else 0.0,
            "MeasuredShare": round(figures.measured_share[u.name], 4)
            if u.name in figures.measured_share else -1.0,
            "NewConnections": figures.new_connections.get(u.name, 0),
            "Mark": up.mark if up else 0,
            "Table": up.table if up and up.routed else 0,
            "LatencyMs": round(tracker.latency_ms, 1)
            if tracker is not None and tracker.latency_ms is not None else -1.0,
            "LossPercent": round(loss, 1) if loss is not None else -1.0,
            "Probing": list(figures.probing.get(u.name, [])),
            "LoadDownMbps": round(load.down_mbps, 2) if load else -1.0,
            "LoadUpMbps": round(load.up_mbps, 2) if load else -1.0,
            "Address6": address6,
            "Gateway6": gateway6[0],
            "GatewaySource6": gateway6[1],
            "State6": _state(up.status6 if up else None,
                             tracker6.phase.value if tracker6 else ""),
            "Reason6": up.reason6 if up else "",
            "Share6": round(up.share6, 4) if up else 0.0,
        }
    return out
