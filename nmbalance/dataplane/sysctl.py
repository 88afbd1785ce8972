"""The router sysctls of our network namespace: IPv4 forwarding, and the
reverse-path filter settings that break balanced replies.

/proc/sys/net shows the namespace of the process reading it, so all of
this stays in the namespace nmbalance runs in. The forwarding value found
before nmbalance turned it on is kept in a file named after the namespace
(its cookie), so `flush` puts back what was there, and only if nmbalance
changed it.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC_IPV4 = Path("/proc/sys/net/ipv4")
STATE_DIR = Path("/run/nmbalance")


SO_NETNS_COOKIE = 71  # Linux 5.14+; not in Python's socket module before 3.13


def netns_id() -> str:
    """This network namespace, the same for every process in it (the daemon, a later
    `flush`): its cookie, never reused while the machine runs; else (older kernels)
    its inode, which a namespace made after this one is gone may get again."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return "c" + str(struct.unpack("Q", sock.getsockopt(socket.SOL_SOCKET,
                                                                 SO_NETNS_COOKIE, 8))[0])
    except OSError:
        return str(os.stat("/proc/self/ns/net").st_ino)


@dataclass(frozen=True)
class Sysctls:
    proc: Path = PROC_IPV4
    state: Path = STATE_DIR

    def _read(self, *parts: str) -> int | None:
        try:
            return int(self.proc.joinpath(*parts).read_text().strip())
        except (OSError, ValueError):
            return None

    def _found_file(self) -> Path:
        return self.state / f"ip_forward.{netns_id()}"

    def forwarding(self) -> int | None:
        """net.ipv4.ip_forward now (None: unreadable)."""
        return self._read("ip_forward")

    def forwarding6(self) -> int | None:
        """net.ipv6.conf.all.forwarding now (None: unreadable). Never turned on by us:
        with it on, the kernel stops taking router advertisements on interfaces
        with accept_ra=1, which is how most uplinks get their IPv6 default route."""
        return self._read("..", "ipv6", "conf", "all", "forwarding")

    def enable_forwarding(self) -> bool:
        """Turn IPv4 forwarding on; True when it was off (and is now remembered so)."""
        value = self.forwarding()
        if value == 1:
            return False
        self.state.mkdir(mode=0o755, parents=True, exist_ok=True)
        found = self._found_file()
        if not found.exists():  # the first value found is the one to restore
            found.write_text(f"{value or 0}\n")
        (self.proc / "ip_forward").write_text("1\n")
        return True

    def restore_forwarding(self) -> int | None:
        """Put back the forwarding value nmbalance found, if it changed it; that value."""
        found = self._found_file()
        try:
            value = int(found.read_text().strip())
        except (OSError, ValueError):
            return None
        (self.proc / "ip_forward").write_text(f"{value}\n")
        found.unlink(missing_ok=True)
        return value

    def reverse_path_warnings(self, devices: Iterable[str]) -> list[str]:
        """Uplinks whose strict rp_filter would drop replies routed by mark."""
        out = []
        rp_all = self._read("conf", "all", "rp_filter") or 0
        mark_all = self._read("conf", "all", "src_valid_mark") or 0
        for dev in devices:
            # The kernel takes the larger rp_filter of `all` and the device's, and
            # src_valid_mark if either sets it.
            rp = max(rp_all, self._read("conf", dev, "rp_filter") or 0)
            marked = mark_all or self._read("conf", dev, "src_valid_mark") or 0
            if rp == 1 and not marked:
                out.append(
                    f"{dev}: strict reverse-path filtering (rp_filter=1) without "
                    "src_valid_mark=1 drops the replies of connections balanced onto it; "
                    f"set net.ipv4.conf.{dev}.rp_filter=2 or "
                    "net.ipv4.conf.all.src_valid_mark=1")
        return out
