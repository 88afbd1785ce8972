"""Host-name probe targets to addresses, through each uplink's own DNS.

A balance.conf names its ping targets (`www.google.ca`). Each name is
resolved per uplink: asked of that uplink's DNS servers (its lease's, or
the config's, else the system's) from the uplink's own address and with
its mark, so the query leaves through the uplink it is about even from the
address of the uplink that holds the main default route (whose unmarked
traffic is balanced like any other). Answers are
kept for their TTL (bounded), re-asked when they expire or when a probe to
them failed, and kept, stale, while a new answer does not come: a resolver
that is slow for a moment does not take an uplink down, but a name that
never resolved is a lost round, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from nmbalance.config.values import usable_ipv4

log = logging.getLogger(__name__)

MIN_TTL = 30.0  # never ask more often than this while answers come
MAX_TTL = 3600.0  # nor trust an answer longer
RETRY = 5.0  # after a failed query, or a probe lost to an answer
QUERY_TIMEOUT = 2.0
SYSTEM_RESOLV_CONF = Path("/etc/resolv.conf")

# (name, server, source address, mark, timeout) -> (addresses, ttl); raises ResolveError.
Query = Callable[[str, IPv4Address, IPv4Address, int, float],
                 Awaitable[tuple[list[IPv4Address], float]]]


class ResolveError(Exception):
    pass


async def dns_query(name: str, server: IPv4Address, source: IPv4Address, mark: int,
                    timeout: float) -> tuple[list[IPv4Address], float]:
    """One A query over UDP from `source` with `mark`, in a worker thread (dnspython's
    synchronous query is the one that takes a socket of ours); the answer, checked."""
    return await asyncio.to_thread(_query, name, server, source, mark, timeout)


def _query(name: str, server: IPv4Address, source: IPv4Address, mark: int,
           timeout: float) -> tuple[list[IPv4Address], float]:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    query = dns.message.make_query(name, dns.rdatatype.A)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            if mark:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            sock.bind((str(source), 0))
            answer = dns.query.udp(query, str(server), timeout=timeout, sock=sock)
    except dns.exception.Timeout:
        raise ResolveError(f"no answer from {server}") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise ResolveError(f"{server}: {exc}") from None
    if answer.rcode() != dns.rcode.NOERROR:
        raise ResolveError(f"{server} says {dns.rcode.to_text(answer.rcode())}")
    addresses: list[IPv4Address] = []
    ttl = MAX_TTL
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.A:
            ttl = min(ttl, float(rrset.ttl))
            for record in rrset:
                try:  # an answer is data from outside: only addresses a probe can use
                    addresses.append(usable_ipv4(record.address, "an answer"))
                except ValueError:
                    continue
    if not addresses:
        raise ResolveError(f"{server} has no usable IPv4 address for it")
    return addresses, ttl


def system_servers(path: Path = SYSTEM_RESOLV_CONF) -> list[IPv4Address]:
    """The IPv4 name servers of resolv.conf (a local stub included)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines()[:1000]:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                addr = ip_address(fields[1])
            except ValueError:
                continue
            if isinstance(addr, IPv4Address) and not (addr.is_unspecified or addr.is_multicast):
                out.append(addr)
    return out[:3]


@dataclass
class _Entry:
    addresses: tuple[IPv4Address, ...] = ()
    expires: float = 0.0  # when to ask again
    server: IPv4Address | None = None
    error: str = ""


class ProbeResolver:
    def __init__(self, query: Query = dns_query,
                 clock: Callable[[], float] = time.monotonic,
                 fallback: Callable[[], list[IPv4Address]] = system_servers) -> None:
        self._query = query
        self._clock = clock
        self._fallback = fallback
        self._entries: dict[tuple[str, str], _Entry] = {}

    async def resolve(self, uplink: str, name: str, servers: Sequence[IPv4Address],
                      source: IPv4Address, mark: int = 0) -> tuple[IPv4Address, ...]:
        """The name's addresses for this uplink: cached, or asked now when due.
        Raises ResolveError when it never resolved."""
        entry = self._entries.setdefault((uplink, name), _Entry())
        now = self._clock()
        if now >= entry.expires:
            await self._ask(uplink, name, entry, list(servers) or self._fallback(), source,
                            mark, now)
        if not entry.addresses:
            raise ResolveError(f"cannot resolve {name}: {entry.error}")
        return entry.addresses

    async def _ask(self, uplink: str, name: str, entry: _Entry, servers: list[IPv4Address],
                   source: IPv4Address, mark: int, now: float) -> None:
        errors = []
        for server in servers[:3]:
            try:
                addresses, ttl = await self._query(name, server, source, mark, QUERY_TIMEOUT)
            except ResolveError as exc:
                errors.append(str(exc))
                continue
            found = tuple(sorted(set(addresses)))
            if found != entry.addresses:
                log.info("%s: probing %s at %s (resolved through %s)", uplink, name,
                         ", ".join(map(str, found)), server)
            entry.addresses, entry.server, entry.error = found, server, ""
            entry.expires = now + min(max(ttl, MIN_TTL), MAX_TTL)
            return
        entry.error = "; ".join(errors) or "no DNS server known for this uplink"
        entry.expires = now + RETRY
        if entry.addresses:
            log.info("%s: %s not re-resolved (%s); probing %s still", uplink, name, entry.error,
                     ", ".join(map(str, entry.addresses)))

    def lost(self, uplink: str, name: str) -> None:
        """A probe to the name's address went unanswered: ask again soon (the name may
        have moved), at most every RETRY seconds."""
        entry = self._entries.get((uplink, name))
        if entry is not None:
            entry.expires = min(entry.expires, self._clock() + RETRY)

    def shown(self, uplink: str) -> dict[str, str]:
        """name -> what it resolves to now for this uplink (status, D-Bus)."""
        return {name: ", ".join(map(str, e.addresses)) or f"unresolved: {e.error}"
                for (up, name), e in self._entries.items() if up == uplink}

    def keep(self, wanted: set[tuple[str, str]]) -> None:
        """Forget names no uplink probes any more (after a reload)."""
        self._entries = {k: v for k, v in self._entries.items() if k in wanted}
