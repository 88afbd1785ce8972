"""Values from outside (D-Bus properties, lease files, JSON) become typed
values here, or nothing: a malformed one is dropped and logged once, never
passed on."""

from __future__ import annotations

import logging
import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

log = logging.getLogger(__name__)
_IFNAME = re.compile(r"^[A-Za-z0-9_.+@:-]{1,15}$")
_seen: set[str] = set()


def _once(what: str, value: object) -> None:
    key = f"{what}:{value!r}"[:200]
    if key not in _seen:
        _seen.add(key)
        log.warning("ignoring malformed %s from outside: %r", what, value)


def ifname(value: Any) -> str | None:
    if isinstance(value, str) and _IFNAME.match(value):
        return value
    if value not in (None, ""):
        _once("interface name", value)
    return None


def address(value: Any, what: str = "address") -> IPv4Address | IPv6Address | None:
    """An address from a string, or from a list of bytes as networkd's JSON has them."""
    try:
        if isinstance(value, list) and len(value) in (4, 16) and all(
                isinstance(b, int) and 0 <= b <= 255 for b in value):
            return ip_address(bytes(value))
        if isinstance(value, str) and value:
            return ip_address(value.strip())
    except ValueError:
        pass
    if value not in (None, "", []):
        _once(what, value)
    return None


def text(value: Any, limit: int = 256) -> str | None:
    if isinstance(value, str) and value and len(value) <= limit and value.isprintable():
        return value
    if value not in (None, ""):
        _once("text", value)
    return None
