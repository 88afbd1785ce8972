"""Apply a Plan: routing first (so a new table exists before marks point at
it), then the nft table in one transaction (contents only when the structure
is unchanged), then conntrack of uplinks that left rotation; read back."""

from __future__ import annotations

from dataclasses import dataclass

from nmbalance.core.plan import Plan
from nmbalance.dataplane import conntrack, routing
from nmbalance.dataplane.nft import NftTable, TableState
from nmbalance.errors import ApplyError


@dataclass(frozen=True)
class ApplyReport:
    nft_mode: str  # "full" or "contents"
    routing: routing.RoutingChanges
    conntrack_dropped: int
    left_rotation: frozenset[int]


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


def apply_plan(plan: Plan, *, flush_conntrack: bool = True) -> ApplyReport:
    table = NftTable(plan.nft.table)
    before = table.read()
    changes = routing.reconcile(plan.routes, plan.rules, plan.route_protocol)
    if before is not None and before.digest == plan.nft.digest:
        table.run(plan.nft.contents)
        mode = "contents"
    else:
        table.run(plan.nft.full_transaction() + restore_sticky(before, plan))
        mode = "full"
    after = table.read()
    if after is None or after.digest != plan.nft.digest or after.live != plan.live_marks:
        raise ApplyError("the nft table differs from the plan after apply")
    left = frozenset(before.live - plan.live_marks) if before is not None else frozenset()
    dropped = conntrack.drop_marked(left, plan.mark_mask) if flush_conntrack else 0
    return ApplyReport(mode, changes, dropped, left)


def flush(table_name: str, route_protocol: int) -> tuple[bool, routing.RoutingChanges]:
    """Remove everything we installed: our table, our routes, our rules."""
    removed_table = NftTable(table_name).delete()
    changes = routing.reconcile((), (), route_protocol)
    return removed_table, changes
