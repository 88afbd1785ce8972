"""Whether `nmbalance run` is alive in this network namespace.

The daemon listens on an abstract unix socket. Abstract names belong to the
network namespace, need no file (the unit's ProtectSystem=strict leaves none
writable), vanish with the process however it dies, and can be held by one
process only: so a second daemon refuses to start, and the dispatcher and
`apply` know a daemon owns the kernel state even when the system bus is
gone or the daemon is too busy to answer on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct

ADDRESS = b"\0io.github.nmbalance1/daemon"
_UCRED = struct.Struct("=iII")  # pid, uid, gid


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"another nmbalance daemon runs in this network namespace"
                         f"{f' (pid {pid})' if pid else ''}")
        self.pid = pid


def running_daemon(address: bytes = ADDRESS) -> int | None:
    """The pid of the daemon listening here (0 if it cannot be told), or None."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
        except OSError:
            return None  # nobody listens
        try:
            pid, _, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      _UCRED.size))
        except OSError:
            return 0
        return int(pid)


class Presence:
    """Held by the daemon for as long as it runs."""

    def __init__(self, address: bytes = ADDRESS) -> None:
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(address)
        except OSError as exc:
            self._sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise AlreadyRunning(running_daemon(address)) from None
            raise
        self._sock.listen(16)

    async def serve(self) -> None:
        """Accept and close: a connection is only a question, and the answer is
        that it could connect (and our pid, in its peer credentials)."""
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
