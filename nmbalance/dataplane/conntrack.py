"""Drop the conntrack entries of uplinks that left rotation, and only those."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from pyroute2 import Conntrack


class ConntrackCleaner:
    """Deletes entries by ct mark. Keeps a netlink socket per family open between
    calls: opening one costs more than a whole health-change apply."""

    def __init__(self) -> None:
        self._ct: dict[int, Conntrack] = {}

    def drop_marked(self, marks: Iterable[int], mask: int,
                    family: int = socket.AF_INET) -> frozenset[int]:
        """Delete entries of `family` whose ct mark, within `mask`, equals one of `marks`.

        One request per mark, and the kernel filters and deletes by itself:
        dumping entries to delete them one by one costs ~0.3 ms each in
        Python, which on a busy router would hold up the next reconcile. The
        kernel flushes the family of the request's header only, so an uplink
        whose IPv6 died keeps its IPv4 flows."""
        wanted = frozenset(marks)
        if wanted and family not in self._ct:
            self._ct[family] = Conntrack(nfgen_family=family)
        for mark in sorted(wanted):
            self._ct[family].flush(mark=mark, mark_mask=mask)
        return wanted

    def close(self) -> None:
        for ct in self._ct.values():
            ct.close()
        self._ct.clear()
