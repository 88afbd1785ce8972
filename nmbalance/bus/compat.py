"""dbus-fast, or dbus-next where only that is installed: the names both offer.

dbus-fast is the maintained fork with the same API; Fedora ships no
dbus-next, and old Debian releases no dbus-fast. Nothing else in nmbalance
imports either directly.
"""

from __future__ import annotations

try:
    from dbus_fast import (
        BusType,
        DBusError,
        Message,
        MessageType,
        NameFlag,
        RequestNameReply,
        Variant,
    )
    from dbus_fast.aio import MessageBus
    from dbus_fast.constants import PropertyAccess
    from dbus_fast.service import ServiceInterface, dbus_property, method, signal
except ImportError:  # pragma: no cover - exercised where only dbus-next exists
    from dbus_next import (  # type: ignore[no-redef]
        BusType,
        DBusError,
        Message,
        MessageType,
        NameFlag,
        RequestNameReply,
        Variant,
    )
    from dbus_next.aio import MessageBus  # type: ignore[no-redef]
    from dbus_next.constants import PropertyAccess  # type: ignore[no-redef]
    from dbus_next.service import (  # type: ignore[no-redef]
        ServiceInterface,
        dbus_property,
        method,
        signal,
    )

__all__ = [
    "BusType", "DBusError", "Message", "MessageBus", "MessageType", "NameFlag", "PropertyAccess",
    "RequestNameReply",
    "ServiceInterface", "Variant", "dbus_property", "method", "signal",
]
