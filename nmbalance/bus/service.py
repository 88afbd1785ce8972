"""Our service on the system bus (contract: DESIGN.md "D-Bus").

    io.github.nmbalance1  /io/github/nmbalance1               io.github.nmbalance1.Manager
                          /io/github/nmbalance1/uplink/NAME  io.github.nmbalance1.Uplink

Anyone may read; the policy file lets only root and one group call the
methods that change something. A failure reaches the caller as a D-Bus error
with a one-line message, never a traceback.

dbus-fast reads D-Bus signatures from the annotations ("s", "b", ...), so
this module keeps them as plain strings (no postponed evaluation).
"""

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any, Protocol

from nmbalance import __version__
from nmbalance.bus.compat import DBusError, PropertyAccess, ServiceInterface, dbus_property, method
from nmbalance.errors import NmbalanceError

log = logging.getLogger(__name__)

BUS_NAME = "io.github.nmbalance1"
MANAGER_PATH = "/io/github/nmbalance1"
MANAGER_IFACE = "io.github.nmbalance1.Manager"
UPLINK_IFACE = "io.github.nmbalance1.Uplink"
ERROR = "io.github.nmbalance1.Error"


def uplink_path(name: str) -> str:
    """A path element for any uplink name: bytes outside [A-Za-z0-9] as _XX."""
    return f"{MANAGER_PATH}/uplink/" + re.sub(
        r"[^A-Za-z0-9]", lambda m: f"_{ord(m.group()):02x}", name)


class Control(Protocol):
    """What the service may ask of the daemon."""

    async def reload(self) -> None: ...  # raises NmbalanceError with the reason
    async def set_uplink_enabled(self, name: str, enabled: bool) -> None: ...
    async def refresh(self, reason: str) -> None: ...
    def plan_text(self) -> str: ...
    def metrics_text(self) -> str: ...


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except DBusError:
        raise
    except NmbalanceError as exc:
        raise DBusError(f"{ERROR}.{type(exc).__name__}", str(exc)) from None
    except Exception as exc:
        log.exception("D-Bus method failed")
        raise DBusError(f"{ERROR}.Failed", f"{type(exc).__name__}: {exc}") from None


class ManagerInterface(ServiceInterface):  # type: ignore[misc]
    def __init__(self, control: Control) -> None:
        super().__init__(MANAGER_IFACE)
        self._control = control
        self._values: dict[str, Any] = {
            "Mode": "", "Summary": "starting", "Uplinks": [], "ConfigPath": "", "Following": [],
            "Choices": []}

    def update(self, **values: Any) -> None:
        changed = {k: v for k, v in values.items() if self._values.get(k) != v}
        self._values.update(changed)
        if changed:
            self.emit_properties_changed(changed)

    @method()
    async def Reload(self) -> None:
        with _errors():
            await self._control.reload()

    @method()
    async def SetUplinkEnabled(self, name: "s", enabled: "b") -> None:
        with _errors():
            await self._control.set_uplink_enabled(name, enabled)

    @method()
    async def Refresh(self, reason: "s") -> None:
        with _errors():
            await self._control.refresh(reason[:200])

    @method()
    def GetPlan(self) -> "s":
        with _errors():
            return self._control.plan_text()

    @method()
    def GetMetrics(self) -> "s":
        """The metrics, as OpenMetrics text."""
        with _errors():
            return self._control.metrics_text()

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> "s":
        return __version__

    @dbus_property(access=PropertyAccess.READ)
    def Mode(self) -> "s":
        return str(self._values["Mode"])

    @dbus_property(access=PropertyAccess.READ)
    def Summary(self) -> "s":
        return str(self._values["Summary"])

    @dbus_property(access=PropertyAccess.READ)
    def Uplinks(self) -> "ao":
        return list(self._values["Uplinks"])

    @dbus_property(access=PropertyAccess.READ)
    def ConfigPath(self) -> "s":
        return str(self._values["ConfigPath"])

    @dbus_property(access=PropertyAccess.READ)
    def Following(self) -> "as":
        return list(self._values["Following"])

    @dbus_property(access=PropertyAccess.READ)
    def Choices(self) -> "as":
        """What each measured method chose, and the figures behind it."""
        return list(self._values["Choices"])


UPLINK_DEFAULTS: dict[str, Any] = {
    "Name": "", "State": "", "Health": "", "Reason": "", "Enabled": True, "Interface": "",
    "Connection": "", "Gateway": "", "GatewaySource": "", "Address": "", "Weight": 0.0,
    "Share": 0.0, "MeasuredShare": -1.0, "NewConnections": 0, "Mark": 0, "Table": 0,
    "LatencyMs": -1.0, "LossPercent": -1.0, "Probing": [],
    "LoadDownMbps": -1.0, "LoadUpMbps": -1.0, "Address6": "", "Gateway6": "",
    "GatewaySource6": "", "State6": "", "Reason6": "", "Share6": 0.0,
}


class UplinkInterface(ServiceInterface):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(UPLINK_IFACE)
        self._values = dict(UPLINK_DEFAULTS, Name=name)

    def update(self, **values: Any) -> None:
        changed = {k: v for k, v in values.items() if self._values.get(k) != v}
        self._values.update(changed)
        if changed:
            self.emit_properties_changed(changed)

    @property
    def values(self) -> dict[str, Any]:
        return dict(self._values)

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> "s":
        return str(self._values["Name"])

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> "s":
        return str(self._values["State"])

    @dbus_property(access=PropertyAccess.READ)
    def Health(self) -> "s":
        return str(self._values["Health"])

    @dbus_property(access=PropertyAccess.READ)
    def Reason(self) -> "s":
        return str(self._values["Reason"])

    @dbus_property(access=PropertyAccess.READ)
    def Enabled(self) -> "b":
        return bool(self._values["Enabled"])

    @dbus_property(access=PropertyAccess.READ)
    def Interface(self) -> "s":
        return str(self._values["Interface"])

    @dbus_property(access=PropertyAccess.READ)
    def Connection(self) -> "s":
        return str(self._values["Connection"])

    @dbus_property(access=PropertyAccess.READ)
    def Gateway(self) -> "s":
        return str(self._values["Gateway"])

    @dbus_property(access=PropertyAccess.READ)
    def GatewaySource(self) -> "s":
        return str(self._values["GatewaySource"])

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> "s":
        return str(self._values["Address"])

    @dbus_property(access=PropertyAccess.READ)
    def Weight(self) -> "d":
        return float(self._values["Weight"])

    @dbus_property(access=PropertyAccess.READ)
    def Share(self) -> "d":
        return float(self._values["Share"])

    @dbus_property(access=PropertyAccess.READ)
    def MeasuredShare(self) -> "d":
        """Its part of the new connections of about the last minute (-1: none yet)."""
        return float(self._values["MeasuredShare"])

    @dbus_property(access=PropertyAccess.READ)
    def NewConnections(self) -> "t":
        """New connections it took since the daemon started."""
        return int(self._values["NewConnections"])

    @dbus_property(access=PropertyAccess.READ)
    def Mark(self) -> "u":
        return int(self._values["Mark"])

    @dbus_property(access=PropertyAccess.READ)
    def Table(self) -> "u":
        """Its routing table (0: it has none now)."""
        return int(self._values["Table"])

    @dbus_property(access=PropertyAccess.READ)
    def LatencyMs(self) -> "d":
        return float(self._values["LatencyMs"])

    @dbus_property(access=PropertyAccess.READ)
    def LossPercent(self) -> "d":
        return float(self._values["LossPercent"])

    @dbus_property(access=PropertyAccess.READ)
    def Address6(self) -> "s":
        """An IPv6 address of its interface, not link-local ("": none)."""
        return str(self._values["Address6"])

    @dbus_property(access=PropertyAccess.READ)
    def Gateway6(self) -> "s":
        """Its IPv6 default route's next hop (link-local as a rule: on Interface)."""
        return str(self._values["Gateway6"])

    @dbus_property(access=PropertyAccess.READ)
    def GatewaySource6(self) -> "s":
        return str(self._values["GatewaySource6"])

    @dbus_property(access=PropertyAccess.READ)
    def State6(self) -> "s":
        """Its IPv6 state, in State's words ("": IPv6 is the system's, ipv6 = "off")."""
        return str(self._values["State6"])

    @dbus_property(access=PropertyAccess.READ)
    def Reason6(self) -> "s":
        return str(self._values["Reason6"])

    @dbus_property(access=PropertyAccess.READ)
    def Share6(self) -> "d":
        """Its share of new IPv6 connections under the global mode."""
        return float(self._values["Share6"])

    @dbus_property(access=PropertyAccess.READ)
    def Probing(self) -> "as":
        """Each probe target and what it stands for now ("ping.example.net = 192.0.2.7")."""
        return list(self._values["Probing"])

    @dbus_property(access=PropertyAccess.READ)
    def LoadDownMbps(self) -> "d":
        """Smoothed download rate, Mbit/s (-1: not measured)."""
        return float(self._values["LoadDownMbps"])

    @dbus_property(access=PropertyAccess.READ)
    def LoadUpMbps(self) -> "d":
        return float(self._values["LoadUpMbps"])
