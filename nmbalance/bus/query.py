"""Asking a running daemon over the bus: its status (for `nmbalance status`),
a refresh (for the dispatcher scripts), None when no daemon answers; and
what must reach it or fail loudly (enable, disable, metrics)."""

from __future__ import annotations

import asyncio
from typing import Any

from nmbalance.bus.client import BusCallError, call, close, connect, get_all, name_has_owner
from nmbalance.bus.service import BUS_NAME, ERROR, MANAGER_IFACE, MANAGER_PATH, UPLINK_IFACE
from nmbalance.errors import NmbalanceError, UsageError

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


NO_DAEMON = "no nmbalance daemon runs here (start it: systemctl start nmbalance)"


async def _ask(member: str, signature: str = "", body: tuple[Any, ...] = ()) -> list[Any]:
    try:
        bus = await connect()
    except Exception as exc:  # no bus at all
        raise NmbalanceError(f"{NO_DAEMON}; no system bus ({exc})") from None
    try:
        if not await name_has_owner(bus, BUS_NAME):
            raise NmbalanceError(NO_DAEMON)
        return await call(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, member, signature, body)
    except BusCallError as exc:
        if exc.name == "org.freedesktop.DBus.Error.AccessDenied":
            raise NmbalanceError(
                f"not allowed to call {member}: the bus policy lets only root and the netdev "
                "group steer the daemon (see /usr/share/dbus-1/system.d/io.github.nmbalance1.conf)"
            ) from None
        if exc.name == f"{ERROR}.UsageError":
            raise UsageError(exc.text) from None
        raise NmbalanceError(f"the daemon says: {exc.text or exc.name}") from None
    finally:
        await close(bus)


def _steer(coro: Any) -> Any:
    try:
        return asyncio.run(asyncio.wait_for(coro, TIMEOUT))
    except TimeoutError:
        raise NmbalanceError(f"the daemon did not answer within {TIMEOUT:g} s") from None


def set_uplink_enabled(name: str, enabled: bool) -> None:
    _steer(_ask("SetUplinkEnabled", "sb", (name, enabled)))


def daemon_metrics() -> str:
    body = _steer(_ask("GetMetrics"))
    return str(body[0]) if body else ""
