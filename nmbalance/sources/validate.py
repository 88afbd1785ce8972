"""Values from outside (D-Bus properties, lease files, JSON) become typed
values here, or nothing: a malformed one is dropped and logged once, never
passed on."""

from __future__ import annotations

import logging
import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from nmbalance.config.model import IFNAME_PATTERN
from nmbalance.config.values import usable_address

log = logging.getLogger(__name__)
# The same rule as a configured interface name: these names reach nft text too.
_IFNAME = re.compile(IFNAME_PATTERN)
_seen: set[str] = set()


def _once(what: str, value: object) -> None:
    key = f"{what}:{value!r:.200}"
    if key not in _seen:
        if len(_seen) >= 1000:  # a stream of ever-new garbage must not grow memory
            _seen.clear()
        _seen.add(key)
        log.warning("ignoring malformed %s from outside: %.200r", what, value)


def ifname(value: Any) -> str | None:
    if isinstance(value, str) and _IFNAME.fullmatch(value):  # match() lets "eth0\n" through
        return value
    if value not in (None, ""):
        _once("interface name", value)
    return None


def address(value: Any, what: str = "address") -> IPv4Address | IPv6Address | None:
    """A usable unicast address (config.values.usable_address: no scope id, not
    ::, loopback, multicast or broadcast), from a string or, as networkd's JSON
    has them, a list of bytes."""
    try:
        if isinstance(value, list) and len(value) in (4, 16) and all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value):
            return usable_address(ip_address(bytes(value)), what)
        if isinstance(value, str) and value:
            return usable_address(value, what)
    except ValueError:
        pass
    if value not in (None, "", []):
        _once(what, value)
    return None


def mapping(value: Any, what: str) -> dict[str, Any]:
    """A dict with string keys, or {} (logged once) for anything else."""
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return value
    if value not in (None, {}):
        _once(what, value)
    return {}


def items(value: Any, what: str) -> list[Any]:
    """A list, or [] (logged once) for anything else."""
    if isinstance(value, list):
        return value
    if value not in (None, []):
        _once(what, value)
    return []


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
    for word in words[:4096].split():
        addr = address(word, what)
        if isinstance(addr, IPv4Address):
            return addr
    return None


def addresses(entries: Any, key: str, what: str) -> tuple[IPv4Address | IPv6Address, ...]:
    """The valid addresses under `key` in a list of dicts; the rest dropped."""
    out = []
    for entry in items(entries, what):
        addr = address(mapping(entry, what).get(key), what)
        if addr is not None:
            out.append(addr)
    return tuple(out)
