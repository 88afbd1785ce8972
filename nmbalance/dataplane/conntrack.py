"""Drop the conntrack entries of uplinks that left rotation, and only those."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError


def drop_marked(marks: Iterable[int], mask: int) -> int:
    """Delete entries whose ct mark, within `mask`, equals one of `marks`."""
    wanted = set(marks)
    if not wanted:
        return 0
    dropped = 0
    ct = Conntrack()
    try:
        for mark in sorted(wanted):
            for entry in list(ct.dump_entries(mark=mark, mark_mask=mask)):
                # The kernel filters by mark; check again so a kernel that
                # ignores the filter can never make us drop a healthy flow.
                if (entry.mark or 0) & mask != mark:
                    continue
                try:
                    ct.delete(entry)
                    dropped += 1
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:
                        raise
    finally:
        ct.close()
    return dropped
