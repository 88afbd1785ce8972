"""Kernel events: links, addresses and routes changing, over rtnetlink.

The socket is our own non-blocking one, read by the asyncio loop, and
pyroute2 only decodes what arrives: pyroute2 0.9's synchronous IPRoute runs
an event loop of its own and cannot be used inside ours, and 0.7 has no
asyncio API at all. The daemon needs to know *that* something changed, not
every detail: it takes a fresh snapshot after each burst.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
RT_TABLE_LOCAL = 255


@dataclass(frozen=True)
class Change:
    kind: str  # "link", "address", "route", or "overflow" (events were lost: resync)
    event: str = ""
    index: int | None = None


class NetlinkWatch:
    """Bind first, snapshot after: open this before reading the initial state,
    so nothing that happens in between is missed."""

    def __init__(self, own_proto: int) -> None:
        self.own_proto = own_proto
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        # Route churn from a big table can come in large bursts.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, GROUPS))
        self._marshal = MarshalRtnl()

    def close(self) -> None:
        self._sock.close()

    def relevant(self, msg: Any) -> Change | None:
        """Our own routes (and the local table) are echoes of what we did."""
        event = str(msg.get("event"))
        if event.endswith("ROUTE"):
            table = msg.get_attr("RTA_TABLE") or msg.get("table")
            if msg.get("proto") == self.own_proto or table == RT_TABLE_LOCAL:
                return None
            return Change("route", event)
        if event.endswith("ADDR"):
            return Change("address", event, msg.get("index"))
        if event.endswith("LINK"):
            return Change("link", event, msg.get("index"))
        return None

    async def changes(self) -> AsyncIterator[Change]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(self._sock, 1 << 16)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    yield Change("overflow")
                    continue
                raise
            for msg in self._marshal.parse(data):
                change = self.relevant(msg)
                if change is not None:
                    yield change
