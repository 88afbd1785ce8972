"""Values from outside (D-Bus properties, lease files, JSON) become typed
values here, or nothing: a malformed one is dropped and logged once, never
passed on."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from nmbalance.config.model import IFNAME_PATTERN

log = logging.getLogger(__name__)
# The same rule as a configured interface name: these names reach nft text too.
_IFNAME = re.compile(IFNAME_PATTERN)
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


def first_ipv4(words: Any, what: str) -> IPv4Address | None:
    """The first valid IPv4 address of a space-separated list ("10.0.0.1 10.0.0.2")."""
    if not isinstance(words, str):
        return None
    for word in words.split():
        addr = address(word, what)
        if isinstance(addr, IPv4Address):
            return addr
    return None


def addresses(entries: Iterable[Any] | None, key: str, what: str
              ) -> tuple[IPv4Address | IPv6Address, ...]:
    """The valid addresses under `key` in a list of dicts; the rest dropped."""
    out = []
    for entry in entries or []:
        if isinstance(entry, dict):
            addr = address(entry.get(key), what)
            if addr is not None:
                out.append(addr)
    return tuple(out)
