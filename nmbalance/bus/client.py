"""Small typed helpers over a connected bus: calls, properties, matches.

Errors from the bus become BusCallError here, once, with the D-Bus error
name kept; no caller sees a raw reply.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from typing import Any

from nmbalance.bus.compat import BusType, Message, MessageBus, MessageType, Variant

DBUS = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
PROPERTIES = "org.freedesktop.DBus.Properties"


class BusCallError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


def system_bus_address() -> str | None:
    """Where the system bus is, or None when there is none to connect to."""
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    if address:
        return address
    default = "/run/dbus/system_bus_socket"
    return f"unix:path={default}" if os.path.exists(default) else None


async def connect(address: str | None = None) -> MessageBus:
    address = address or system_bus_address()
    if address is None:
        raise OSError("no system bus (set DBUS_SYSTEM_BUS_ADDRESS or start dbus)")
    bus: MessageBus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    return bus


def unwrap(value: Any) -> Any:
    """Variants all the way down become plain Python values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


async def call(bus: MessageBus, destination: str, path: str, interface: str, member: str,
               signature: str = "", body: Iterable[Any] = ()) -> list[Any]:
    reply = await bus.call(Message(destination=destination, path=path, interface=interface,
                                   member=member, signature=signature, body=list(body)))
    if reply is None:
        return []
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise BusCallError(reply.error_name or "unknown", text)
    return list(reply.body)


async def get_all(bus: MessageBus, destination: str, path: str, interface: str) -> dict[str, Any]:
    body = await call(bus, destination, path, PROPERTIES, "GetAll", "s", [interface])
    result: dict[str, Any] = unwrap(body[0]) if body else {}
    return result


async def get(bus: MessageBus, destination: str, path: str, interface: str, name: str) -> Any:
    body = await call(bus, destination, path, PROPERTIES, "Get", "ss", [interface, name])
    return unwrap(body[0]) if body else None


async def add_match(bus: MessageBus, rule: str) -> None:
    await call(bus, DBUS, DBUS_PATH, DBUS, "AddMatch", "s", [rule])


async def name_has_owner(bus: MessageBus, name: str) -> bool:
    body = await call(bus, DBUS, DBUS_PATH, DBUS, "NameHasOwner", "s", [name])
    return bool(body and body[0])


async def close(bus: MessageBus) -> None:
    """Disconnect and wait until the socket is closed (dbus-next closes it late)."""
    bus.disconnect()
    try:
        await asyncio.wait_for(bus.wait_for_disconnect(), 1.0)  # type: ignore[no-untyped-call]
    except asyncio.CancelledError:
        # The library may cancel its own disconnect future; only our own
        # cancellation is passed on.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:  # whatever the library raises on the way out
        pass
    # dbus-next shuts its socket down but leaves closing it to the garbage collector.
    sock = getattr(bus, "_sock", None)
    if isinstance(sock, socket.socket) and sock.fileno() != -1:
        sock.close()
