"""Asking a running daemon over the bus: its status (for `nmbalance status`)
and a refresh (for the dispatcher scripts). None when no daemon answers."""

from __future__ import annotations

import asyncio
from typing import Any

from nmbalance.bus.client import call, close, connect, get_all, name_has_owner
from nmbalance.bus.service import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, UPLINK_IFACE

TIMEOUT = 5.0


async def _status() -> dict[str, Any] | None:
    bus = await connect()
    try:
        if not await name_has_owner(bus, BUS_NAME):
            return None
        manager = await get_all(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE)
        uplinks = [await get_all(bus, BUS_NAME, path, UPLINK_IFACE)
                   for path in manager.get("Uplinks", [])]
        return {"source": "daemon", "manager": manager, "uplinks": uplinks}
    finally:
        await close(bus)


async def _refresh(reason: str) -> bool:
    bus = await connect()
    try:
        if not await name_has_owner(bus, BUS_NAME):
            return False
        await call(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "Refresh", "s", [reason])
        return True
    finally:
        await close(bus)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(asyncio.wait_for(coro, TIMEOUT))
    except Exception:  # no bus, no daemon, a call refused or a broken bus: no daemon to ask
        return None


def daemon_status() -> dict[str, Any] | None:
    result: dict[str, Any] | None = _run(_status())
    return result


def daemon_refresh(reason: str) -> bool:
    return bool(_run(_refresh(reason)))


def render_daemon_status(status: dict[str, Any]) -> str:
    manager = status["manager"]
    follows = ", ".join(manager.get("Following") or []) or "kernel"
    lines = [f"nmbalance {manager.get('Version', '')}: mode {manager.get('Mode', '')}, "
             f"following {follows}",
             f"{'UPLINK':<12} {'STATE':<10} {'HEALTH':<10} {'SHARE':>6}  {'DEVICE':<10} "
             f"{'GATEWAY':<16} {'FROM':<14} {'RTT':>7} {'LOSS':>5}  REASON"]
    for u in status["uplinks"]:
        rtt = f"{u['LatencyMs']:.1f}ms" if u.get("LatencyMs", -1) >= 0 else "-"
        loss = f"{u['LossPercent']:.0f}%" if u.get("LossPercent", -1) >= 0 else "-"
        state = u.get("State", "") + ("" if u.get("Enabled", True) else "*")
        lines.append(
            f"{u.get('Name', ''):<12} {state:<10} {u.get('Health', ''):<10} "
            f"{u.get('Share', 0.0):>6.1%}  {u.get('Interface') or '-':<10} "
            f"{u.get('Gateway') or '-':<16} {u.get('GatewaySource') or '-':<14} {rtt:>7} "
            f"{loss:>5}  {u.get('Reason', '')}")
        if any(not target[:1].isdigit() for target in u.get("Probing") or []):
            lines.append(f"{'':<12} probing {', '.join(u['Probing'])}")
        if u.get("LoadDownMbps", -1) >= 0:
            lines.append(f"{'':<12} load {u['LoadDownMbps']:.1f} Mbit/s down, "
                         f"{u['LoadUpMbps']:.1f} up")
    lines += [f"choice of {choice}" for choice in manager.get("Choices") or []]
    if any(not u.get("Enabled", True) for u in status["uplinks"]):
        lines.append("* disabled by request (SetUplinkEnabled)")
    return "\n".join(lines) + "\n"
