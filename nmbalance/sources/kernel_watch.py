"""Kernel events: links, addresses, routes and rules over rtnetlink, and
changes to our nft table over nfnetlink.

Both sockets are our own non-blocking ones, read by the asyncio loop;
pyroute2 only decodes the rtnetlink messages (pyroute2 0.9's synchronous
IPRoute runs an event loop of its own and cannot be used inside ours, and 0.7
has no asyncio API at all; it has no nftables event decoder we could rely on
across both, so the few nfnetlink fields we need are read here). The daemon
needs to know *that* something changed, not every detail: it takes a fresh
snapshot after each burst, and reads back what it owns when an event says
someone else may have touched it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV4_RULE = 0x80
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
RTMGRP_IPV6_RULE = 1 << (19 - 1)  # RTNLGRP_IPV6_RULE
GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE
          | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE | RTMGRP_IPV6_RULE)
RT_TABLE_LOCAL = 255

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFPROTO_INET = 1
NLMSG_HDR = struct.Struct("=IHHII")
NFGENMSG_LEN = 4
NFTA_TABLE_NAME = 1  # the table's name: attribute 1 in table, chain, rule, set and element messages
NFTA_GEN_PROC_PID = 2
NFTA_GEN_PROC_NAME = 3
NFT_MSG_NEWGEN = 15
NFT_WHAT = {0: "table replaced", 2: "table deleted", 3: "chains changed", 5: "chains changed",
            6: "rules changed", 8: "rules changed", 9: "sets changed", 11: "sets changed",
            12: "set elements changed", 14: "set elements changed", 22: "objects changed",
            24: "objects changed", 25: "flowtables changed", 27: "flowtables changed"}


class EventKind(StrEnum):
    LINK = "link"
    ADDRESS = "address"
    ROUTE = "route"
    RULE = "rule"
    NFT = "nft"  # our table, changed by another process
    OVERFLOW = "overflow"  # events were lost: read everything again


@dataclass(frozen=True)
class KernelEvent:
    kind: EventKind
    detail: str = ""
    owned: bool = False  # about a route or rule of ours, or our nft table

    def describe(self) -> str:
        return f"{self.kind.value} {self.detail}".strip()


def _ifname(index: Any) -> str:
    try:
        return socket.if_indextoname(int(index))
    except (OSError, TypeError, ValueError):
        return f"#{index}"


def rtnl_event(msg: Any, own_proto: int) -> KernelEvent | None:
    event = str(msg.get("event"))
    if event.endswith("ROUTE"):
        table = msg.get_attr("RTA_TABLE") or msg.get("table")
        if table == RT_TABLE_LOCAL:
            return None
        owned = msg.get("proto") == own_proto
        return KernelEvent(EventKind.ROUTE, f"{'deleted' if 'DEL' in event else 'added'} in "
                                            f"table {table}", owned)
    if event.endswith("RULE"):
        owned = msg.get_attr("FRA_PROTOCOL") == own_proto
        return KernelEvent(EventKind.RULE, "deleted" if "DEL" in event else "added", owned)
    if event.endswith("ADDR"):
        return KernelEvent(EventKind.ADDRESS, f"on {_ifname(msg.get('index'))}")
    if event.endswith("LINK"):
        return KernelEvent(EventKind.LINK, str(msg.get_attr("IFLA_IFNAME") or
                                               _ifname(msg.get("index"))))
    return None


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            break
        out.setdefault(kind & 0x3FFF, data[start + 4:start + length])
        start += (length + 3) & ~3
    return out


def our_thread(tid: int) -> bool:
    """Whether `tid` is a thread of this process: NEWGEN names the committing
    thread, and our transactions come from the kernel worker thread."""
    return tid == os.getpid() or os.path.exists(f"/proc/self/task/{tid}")


class NftTransactions:
    """Reads nfnetlink's nftables notifications: each transaction's messages,
    then a NEWGEN naming the thread that committed it. A transaction from
    another process that touched `inet TABLE` becomes one event."""

    def __init__(self, table: str, ours: Callable[[int], bool] = our_thread) -> None:
        self.table = table
        self.ours = ours
        self._what: list[str] = []

    def feed(self, data: bytes) -> list[KernelEvent]:
        out = []
        offset = 0
        while offset + NLMSG_HDR.size <= len(data):
            length, kind, _, _, _ = NLMSG_HDR.unpack_from(data, offset)
            if length < NLMSG_HDR.size:
                break
            end = min(offset + length, len(data))
            subsys, msg = kind >> 8, kind & 0xFF
            if subsys == NFNL_SUBSYS_NFTABLES and end - offset >= NLMSG_HDR.size + NFGENMSG_LEN:
                family = data[offset + NLMSG_HDR.size]
                attrs = _attrs(data, offset + NLMSG_HDR.size + NFGENMSG_LEN, end)
                if msg == NFT_MSG_NEWGEN:
                    event = self._committed(attrs)
                    if event is not None:
                        out.append(event)
                elif family == NFPROTO_INET and attrs.get(NFTA_TABLE_NAME, b"").rstrip(
                        b"\0") == self.table.encode():
                    what = NFT_WHAT.get(msg, f"message {msg}")
                    if what not in self._what:
                        self._what.append(what)
            offset += (length + 3) & ~3
        return out

    def _committed(self, attrs: dict[int, bytes]) -> KernelEvent | None:
        what, self._what = self._what, []
        raw_pid = attrs.get(NFTA_GEN_PROC_PID, b"")
        pid = struct.unpack(">I", raw_pid)[0] if len(raw_pid) == 4 else None
        if not what or (pid is not None and self.ours(pid)):
            return None
        name = attrs.get(NFTA_GEN_PROC_NAME, b"").rstrip(b"\0").decode(errors="replace")
        by = f"{name or 'a process'} (pid {pid})" if pid is not None else "another process"
        return KernelEvent(EventKind.NFT, f"table inet {self.table}: {', '.join(what)} by {by}",
                           owned=True)


class KernelWatch:
    """Bind first, snapshot after: open this before reading the initial state,
    so nothing that happens in between is missed."""

    def __init__(self, own_proto: int, table: str) -> None:
        self.own_proto = own_proto
        self._rtnl = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        # Route churn from a big table can come in large bursts.
        self._rtnl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._rtnl.bind((0, GROUPS))
        self._nft = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
        self._nft.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._nft.bind((0, 0))
        self._nft.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        self._marshal = MarshalRtnl()
        self.transactions = NftTransactions(table)
        self._queue: asyncio.Queue[KernelEvent] = asyncio.Queue()

    def watch_table(self, table: str) -> None:
        self.transactions.table = table

    def close(self) -> None:
        for sock in (self._rtnl, self._nft):
            # The loop may be closing already, or the socket closed.
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _read(self, sock: socket.socket, parse: Any) -> None:
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                # ENOBUFS: events were dropped. Anything else is as bad: read it all again.
                self._queue.put_nowait(KernelEvent(EventKind.OVERFLOW, str(exc)))
                if exc.errno == errno.ENOBUFS:
                    continue
                return
            for event in parse(data):
                self._queue.put_nowait(event)

    def _parse_rtnl(self, data: bytes) -> list[KernelEvent]:
        return [e for msg in self._marshal.parse(data)
                if (e := rtnl_event(msg, self.own_proto)) is not None]

    async def events(self) -> AsyncIterator[KernelEvent]:
        loop = asyncio.get_running_loop()
        loop.add_reader(self._rtnl.fileno(), self._read, self._rtnl, self._parse_rtnl)
        loop.add_reader(self._nft.fileno(), self._read, self._nft, self.transactions.feed)
        while True:
            yield await self._queue.get()
