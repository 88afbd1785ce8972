"""Drop the conntrack entries of uplinks that left rotation, and only those.

One ctnetlink message per mark: IPCTNL_MSG_CT_DELETE without a tuple, with
CTA_MARK and CTA_MARK_MASK, asks the kernel to flush every entry of the
header's family whose mark matches. The kernel walks its table itself and
answers with one acknowledgement, so the cost is the walk, not a dump to
userspace. A raw socket of our own: pyroute2's synchronous conntrack wrapper
runs an event loop per call, which cost more than the flush itself.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
CTA_MARK, CTA_MARK_MASK = 8, 21
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id


def _attr_u32(kind: int, value: int) -> bytes:
    return struct.pack("=HH", 8, kind) + struct.pack("!I", value)


def flush_request(family: int, mark: int, mask: int, sequence: int) -> bytes:
    """The netlink message that flushes `family`'s entries whose mark & mask == mark."""
    body = struct.pack("=BBH", family, 0, 0)  # nfgenmsg: family, version 0, resource 0
    body += _attr_u32(CTA_MARK, mark) + _attr_u32(CTA_MARK_MASK, mask)
    kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK,
                        sequence, 0) + body


def ack_error(data: bytes, sequence: int) -> int | None:
    """The error code of the acknowledgement of `sequence` in `data` (0: done);
    None when `data` holds none."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        if kind == NLMSG_ERROR and seq == sequence and length >= _HEADER.size + 4:
            return -int(struct.unpack_from("=i", data, offset + _HEADER.size)[0])
        offset += (length + 3) & ~3
    return None


# What to drop: the marks, the mask they are within, and the address family.
Drop = tuple[frozenset[int], int, int]


class ConntrackCleaner:
    """Deletes entries by ct mark. Keeps its netlink socket open between calls."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._sequence = 0
        self._worker: ThreadPoolExecutor | None = None
        self._pending: Future[float] | None = None

    def drop_later(self, drops: Sequence[Drop]) -> Future[float]:
        """`drops` done in a thread of their own, after the ones asked for before;
        the future holds the milliseconds they took, or drop_marked's OSError. The
        kernel walks its whole conntrack table for each mark (about 2 ms with
        262,144 buckets, however few entries go), so a caller that has already put
        new connections elsewhere need not wait for it."""
        self.wait()
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conntrack")

        def run() -> float:
            start = time.perf_counter()
            for marks, mask, family in drops:
                self.drop_marked(marks, mask, family)
            return (time.perf_counter() - start) * 1000

        self._pending = self._worker.submit(run)
        return self._pending

    def wait(self) -> None:
        """Until the drops asked for last are done (their outcome is their future's)."""
        if self._pending is not None:
            self._pending.exception()  # waits; raises nothing
            self._pending = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 NETLINK_NETFILTER)
            sock.bind((0, 0))
            sock.settimeout(5.0)  # the kernel answers at once; never hang the reconcile
            self._sock = sock
        return self._sock

    def drop_marked(self, marks: Iterable[int], mask: int,
                    family: int = socket.AF_INET) -> frozenset[int]:
        """Delete entries of `family` whose ct mark, within `mask`, equals one of
        `marks`. The kernel flushes the family of the request's header only, so an
        uplink whose IPv6 died keeps its IPv4 flows. Raises OSError when the kernel
        refuses."""
        wanted = frozenset(marks)
        for mark in sorted(wanted):
            self._sequence = self._sequence % 0x7FFFFFFF + 1
            sock = self._socket()
            sock.send(flush_request(family, mark, mask, self._sequence))
            while (code := ack_error(sock.recv(65536), self._sequence)) is None:
                pass
            # ENOENT: nothing carried the mark (older kernels say so); fine.
            if code not in (0, errno.ENOENT):
                raise OSError(code, f"conntrack flush of mark {mark:#x}: {os.strerror(code)}")
        return wanted

    def close(self) -> None:
        self.wait()
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
