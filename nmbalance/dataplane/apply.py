"""Apply a Plan: routing first (so a new table exists before marks point at
it), then the nft table in one transaction (contents only when the structure
is unchanged), then conntrack of uplinks that left rotation; read back."""

from __future__ import annotations

import time
from dataclasses import dataclass

from nmbalance.core.plan import Plan
from nmbalance.dataplane import conntrack, routing
from nmbalance.dataplane.nft import NftTable, TableState
from nmbalance.errors import ApplyError


@dataclass(frozen=True)
class ApplyReport:
    nft_mode: str  # "full" or "contents"
    routing: routing.RoutingChanges
    conntrack_flushed: frozenset[int]  # marks whose entries were dropped
    left_rotation: frozenset[int]
    # From the call to the table and routes being in place (new connections follow
    # the plan from then on), and what dropping conntrack entries took after that.
    kernel_ms: float = 0.0
    conntrack_ms: float = 0.0


def restore_sticky(before: TableState | None, plan: Plan) -> str:
    """Re-add learned sticky entries after a whole-table replace, same transaction."""
    if before is None:
        return ""
    live_idents = {u.ident for u in plan.uplinks if u.status.usable}
    out = []
    for name, entries in before.sticky.items():
        owner = plan.nft.sticky_sets.get(name)
        if owner is None or owner not in live_idents or not entries:
            continue
        items = ", ".join(f"{e.key} expires {max(e.expires_s, 1)}s" for e in entries)
        out.append(f"add element inet {plan.nft.table} {name} {{ {items} }}")
    return "\n".join(out) + ("\n" if out else "")


class Applier:
    """Applies plans, remembering what it applied so the next apply does only
    what differs: a health change is one nft transaction with no routing
    dump. A fresh Applier (the one-shot CLI) reads everything from the kernel."""

    def __init__(self, flush_conntrack: bool = True) -> None:
        self.flush_conntrack = flush_conntrack
        self._digest: str | None = None
        self._live: frozenset[int] | None = None
        self._routing: tuple[frozenset[object], frozenset[object]] | None = None
        # Held open: a new libnftables context refills its cache on first use,
        # and a new conntrack socket costs ~10 ms.
        self._tables: dict[str, NftTable] = {}
        self._conntrack = conntrack.ConntrackCleaner()

    def apply(self, plan: Plan) -> ApplyReport:
        started = time.perf_counter()
        table = self._tables.get(plan.nft.table)
        if table is None:
            table = self._tables[plan.nft.table] = NftTable(plan.nft.table)
        routing_now = (frozenset(plan.routes), frozenset(plan.rules))
        changes = routing.RoutingChanges()
        if routing_now != self._routing:
            changes = routing.reconcile(plan.routes, plan.rules, plan.route_protocol)
            self._routing = routing_now
        if self._digest == plan.nft.digest and self._live is not None:
            before_live = self._live
            table.run(plan.nft.contents)
            mode = "contents"
            after_live = table.read_live()
        else:
            before = table.read()
            before_live = before.live if before is not None else frozenset()
            if before is not None and before.digest == plan.nft.digest:
                table.run(plan.nft.contents)
                mode = "contents"
            else:
                table.run(plan.nft.full_transaction() + restore_sticky(before, plan))
                mode = "full"
            after = table.read()
            if after is None or after.digest != plan.nft.digest:
                self._digest = None
                raise ApplyError("the nft table differs from the plan after apply")
            after_live = after.live
        if after_live != plan.live_marks:
            self._digest = None
            raise ApplyError("the nft table's live uplinks differ from the plan after apply")
        self._digest, self._live = plan.nft.digest, after_live
        left = frozenset(before_live - plan.live_marks) & plan.dead_marks
        placed = time.perf_counter()
        dropped = (self._conntrack.drop_marked(left, plan.mark_mask) if self.flush_conntrack
                   else frozenset())
        if changes.failed:
            # The table and the other routes are in place; try these again next time.
            self._routing = None
            raise ApplyError("; ".join(changes.failed))
        return ApplyReport(mode, changes, dropped, left, (placed - started) * 1000,
                           (time.perf_counter() - placed) * 1000)

    def close(self) -> None:
        self._conntrack.close()

    def forget(self) -> None:
        """Distrust the memory (after an error, or when someone else may have changed things)."""
        self._digest = self._live = None
        self._routing = None


def apply_plan(plan: Plan, *, flush_conntrack: bool = True) -> ApplyReport:
    """One-shot apply: read the kernel, change what differs, read back."""
    applier = Applier(flush_conntrack)
    try:
        return applier.apply(plan)
    finally:
        applier.close()


def flush(table_name: str, route_protocol: int) -> tuple[bool, routing.RoutingChanges]:
    """Remove everything we installed: our table, our routes, our rules."""
    removed_table = NftTable(table_name).delete()
    changes = routing.reconcile((), (), route_protocol)
    return removed_table, changes
