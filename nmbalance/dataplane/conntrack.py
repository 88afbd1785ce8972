"""Drop the conntrack entries of uplinks that left rotation, and only those."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError


class ConntrackCleaner:
    """Deletes entries by ct mark. Keeps its netlink socket open between
    calls: opening one costs more than a whole health-change apply."""

    def __init__(self) -> None:
        self._ct: Conntrack | None = None

    def drop_marked(self, marks: Iterable[int], mask: int) -> int:
        """Delete entries whose ct mark, within `mask`, equals one of `marks`."""
        wanted = set(marks)
        if not wanted:
            return 0
        if self._ct is None:
            self._ct = Conntrack()
        dropped = 0
        for mark in sorted(wanted):
            for entry in list(self._ct.dump_entries(mark=mark, mark_mask=mask)):
                # The kernel filters by mark; check again so a kernel that
                # ignores the filter can never make us drop a healthy flow.
                if (entry.mark or 0) & mask != mark:
                    continue
                try:
                    self._ct.delete(entry)
                    dropped += 1
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:
                        raise
        return dropped

    def close(self) -> None:
        if self._ct is not None:
            self._ct.close()
            self._ct = None
