"""fastest-response: learn, per destination, the uplink that answers it first.

The table logs the first packet of a connection to a destination it has
not asked about (NFLOG, rate-limited, prefix "nmb:GROUP"; the connection
itself goes on at once, by weight). Here those packets are read from a
netlink socket of our own (pyroute2 has no NFLOG client), and each
destination is raced over the group's live uplinks: a TCP connect to the
same port from each uplink's address with its mark (ICMP echo for anything
else); the first answer wins. IPv6 destinations (under an ipv6 mode) are raced
the same way from each uplink's IPv6 address, over the uplinks whose IPv6 is
live. Races are bounded in number; the winners are added to the table in
batches, one transaction each, with the group's timeout. A race opens a
short extra connection to the destination per uplink (closed at once with a
reset): `race = false` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from nmbalance.core.ruleset import LEARN_PREFIX
from nmbalance.inet import AnyAddress

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE = 1, 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10
NFLOG_PACKET = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
COPY_BYTES = 64  # an IPv4 or IPv6 header and the ports are all we read
MAX_RACES = 64  # in flight at once
MAX_PENDING = 1024  # destinations waiting for a race; beyond that, dropped (asked again later)
RACE_TIMEOUT = 2.0
BATCH_DELAY = 0.02  # winners are gathered this long into one transaction


@dataclass(frozen=True)
class NewDestination:
    group: str
    address: AnyAddress
    proto: int  # 6 tcp, 17 udp, ...
    port: int  # 0 unless tcp or udp


@dataclass(frozen=True)
class Contender:
    ident: str  # the uplink's nft identifier
    source: AnyAddress  # of the destination's family
    mark: int


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _config(group: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(group)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                       1, 0, 0) + body  # NLM_F_REQUEST


def parse(data: bytes) -> list[NewDestination]:
    """The logged packets in a netlink datagram (data from the kernel, still checked)."""
    out = []
    offset = 0
    while offset + 20 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 20 or offset + length > len(data):
            break
        if kind == NFLOG_PACKET:
            prefix, payload = b"", b""
            at = offset + 20
            while at + 4 <= offset + length:
                alen, akind = struct.unpack_from("=HH", data, at)
                if alen < 4:
                    break
                value = data[at + 4:at + alen]
                if akind & 0x7FFF == NFULA_PREFIX:
                    prefix = value.rstrip(b"\0")
                elif akind & 0x7FFF == NFULA_PAYLOAD:
                    payload = value
                at += (alen + 3) & ~3
            found = _destination(prefix, payload)
            if found is not None:
                out.append(found)
        offset += (length + 3) & ~3
    return out


def _destination(prefix: bytes, packet: bytes) -> NewDestination | None:
    text = prefix.decode("ascii", "replace")
    if not text.startswith(LEARN_PREFIX) or len(packet) < 20:
        return None
    address: AnyAddress
    if packet[0] >> 4 == 4:
        header = (packet[0] & 0x0F) * 4
        proto = packet[9]
        address = IPv4Address(packet[16:20])
    elif packet[0] >> 4 == 6 and len(packet) >= 40:
        # The next header right after the fixed one: TCP or UDP have their ports there;
        # behind an extension header the race is an echo, as for other protocols.
        header, proto, address = 40, packet[6], IPv6Address(packet[24:40])
    else:
        return None
    port = 0
    if proto in (6, 17) and len(packet) >= header + 4:
        port = struct.unpack_from("!H", packet, header + 2)[0]
    return NewDestination(text.removeprefix(LEARN_PREFIX), address, proto, port)


def open_log(group: int) -> socket.socket:
    """A non-blocking socket bound to the NFLOG group, copying packet heads."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                         NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, 0))
    sock.send(_config(group, _attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND))))
    sock.send(_config(group, _attr(NFULA_CFG_MODE, struct.pack("!IBx", COPY_BYTES,
                                                                NFULNL_COPY_PACKET))))
    return sock


async def connect_time(address: AnyAddress, port: int, via: Contender) -> float:
    """Seconds until `address:port` accepts a TCP connection through `via`."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, via.mark)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.bind((str(via.source), 0))
        started = time.perf_counter()
        with contextlib.suppress(ConnectionRefusedError):  # a reset answers too
            await loop.sock_connect(sock, (str(address), port))
        return time.perf_counter() - started
    finally:
        sock.close()  # with linger 0: a reset, not a lingering close


async def echo_time(address: AnyAddress, port: int, via: Contender) -> float:
    from nmbalance.sources.probes import echo

    return await asyncio.to_thread(echo, address, via.source, RACE_TIMEOUT, True,
                                   id(via) & 0xFFFF, 1) / 1000


Race = Callable[[AnyAddress, int, Contender], Awaitable[float]]


async def race(destination: NewDestination, contenders: Sequence[Contender],
               tcp: Race = connect_time, other: Race = echo_time) -> str | None:
    """The ident of the uplink that answered first; None when none did in time."""
    attempt = tcp if destination.proto == 6 and destination.port else other
    tasks = {asyncio.ensure_future(attempt(destination.address, destination.port, c)): c
             for c in contenders}
    deadline = asyncio.get_running_loop().time() + RACE_TIMEOUT
    pending = set(tasks)
    try:
        while pending:
            left = deadline - asyncio.get_running_loop().time()
            done, pending = await asyncio.wait(pending, timeout=max(left, 0),
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                return None
            for task in done:
                if not task.cancelled() and task.exception() is None:
                    return tasks[task].ident
        return None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Learner:
    """Reads new destinations, races them, hands batches of winners to `learned`."""

    def __init__(self, contenders: Callable[[str, int], Sequence[Contender]],
                 learned: Callable[[Mapping[str, Mapping[str, list[AnyAddress]]]],
                                   Awaitable[None]],
                 racer: Callable[[NewDestination, Sequence[Contender]], Awaitable[str | None]]
                 = race) -> None:
        self._contenders = contenders  # (group, family) -> the live uplinks to race over
        self._learned = learned  # {group: {uplink ident: [addresses]}}
        self._race = racer
        self._pending: asyncio.Queue[NewDestination] = asyncio.Queue(MAX_PENDING)
        self._won: dict[str, dict[str, list[AnyAddress]]] = {}
        self._flush = asyncio.Event()
        self.raced = 0
        self.learned = 0

    def offer(self, found: Sequence[NewDestination]) -> None:
        for destination in found:
            with contextlib.suppress(asyncio.QueueFull):  # asked again after ASKED_TIMEOUT
                self._pending.put_nowait(destination)

    async def read(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.offer(parse(await loop.sock_recv(sock, 1 << 16)))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(MAX_RACES):
                tg.create_task(self._racer())
            tg.create_task(self._batcher())

    async def _racer(self) -> None:
        while True:
            destination = await self._pending.get()
            contenders = self._contenders(destination.group, destination.address.version)
            if not contenders:
                continue
            self.raced += 1
            winner = await self._race(destination, contenders)
            log.debug("raced %s (%s port %d) over %s: %s", destination.address,
                      destination.proto, destination.port, ", ".join(c.ident for c in contenders),
                      winner or "no answer")
            if winner is not None:
                self._won.setdefault(destination.group, {}).setdefault(winner, []).append(
                    destination.address)
                self._flush.set()

    async def _batcher(self) -> None:
        while True:
            await self._flush.wait()
            await asyncio.sleep(BATCH_DELAY)
            self._flush.clear()
            won, self._won = self._won, {}
            try:
                await self._learned(won)
                self.learned += sum(len(a) for by in won.values() for a in by.values())
            except Exception as exc:  # the table moved on (a reload): asked again later
                log.debug("learned destinations not added: %s", exc)
