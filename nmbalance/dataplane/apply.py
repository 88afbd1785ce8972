"""Apply a Plan, make before break:

    1. routes added or replaced, rules added (every mark the new table may set
       has its table and rule before the table sets it);
    2. the nft table in one transaction (contents only when the structure is
       unchanged), read back;
    3. conntrack entries of uplinks that left rotation dropped;
    4. rules, then routes, that the plan no longer has removed; read back.

A kill between any two steps leaves every marked flow with a route, and the
next apply reconciles exactly. An uplink whose routes the kernel refuses
stops the apply before step 2 (RoutesRefused): the caller takes that uplink
out of the plan and applies again, so it never takes new connections while
its route is missing, and the others go on.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Collection, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from pyroute2 import IPRoute

from nmbalance.core.numbering import Layout, ids_in_kernel
from nmbalance.core.plan import Plan
from nmbalance.core.restructure import Restructure, blocks, changed_blocks, restructure
from nmbalance.core.ruleset import sticky_sets, sticky_timeouts
from nmbalance.dataplane import conntrack, routing
from nmbalance.dataplane.nft import NftTable, TableState, digest_of
from nmbalance.dataplane.radvd import Radvd
from nmbalance.dataplane.sysctl import Sysctls
from nmbalance.errors import ApplyError

log = logging.getLogger(__name__)


class RoutesRefused(ApplyError):
    """The kernel refused some routes or rules; `refused`: routing table -> why.
    Nothing of the nft table was changed."""

    def __init__(self, refused: Mapping[int, str]) -> None:
        super().__init__("; ".join(refused.values()))
        self.refused = dict(refused)


def foreign_table(name: str) -> str:
    return (f"table inet {name} exists but nmbalance did not make it (it lacks the marker "
            "chain structure_...): refusing to replace or delete it; remove it yourself "
            "or set kernel.table to another name")


def refused_uplinks(plan: Plan, exc: RoutesRefused) -> dict[str, str]:
    """The uplinks whose routes `exc` says were refused, with the kernel's reason.
    Raises ApplyError when a refusal is no uplink's (the rule every plan needs)."""
    tables = {u.table: u.name for u in plan.uplinks}
    stray = [why for table, why in exc.refused.items() if table not in tables]
    if stray:
        raise ApplyError("; ".join(stray))
    return {tables[table]: why for table, why in exc.refused.items()}


@dataclass(frozen=True)
class ApplyReport:
    nft_mode: str  # "full", "in place", "contents" or "" (unchanged)
    routing: routing.RoutingChanges
    conntrack_flushed: frozenset[int]  # marks whose entries were dropped
    left_rotation: frozenset[int]
    # From the call to the table and routes being in place (new connections follow
    # the plan from then on), and what dropping conntrack entries took after that.
    kernel_ms: float = 0.0
    conntrack_ms: float = 0.0
    conntrack_flushed6: frozenset[int] = frozenset()  # ... of IPv6 flows
    # With the drops in the background: done when they are, with what they took (ms).
    conntrack_done: Future[float] | None = None


# A change of structure done in place (core.restructure), not by a whole-table replace.
IN_PLACE = "in place"


def restore_sticky(before: TableState | None, plan: Plan,
                   only: Collection[str] | None = None) -> str:
    """Re-add learned sticky entries after a whole-table replace, same transaction;
    `only`: of these sets (the ones made again in place)."""
    if before is None:
        return ""
    live = {u.ident for u in plan.uplinks if u.status.usable}
    live6 = {u.ident for u in plan.uplinks if u.status6 is not None and u.status6.usable}
    sets6 = sticky_sets(plan.nft.spec, 6)
    timeouts = sticky_timeouts(plan.nft.spec)
    out = []
    for name, entries in before.sticky.items():
        if only is not None and name not in only:
            continue
        owner = plan.nft.sticky_sets.get(name)
        if owner is None or owner not in (live6 if name in sets6 else live) or not entries:
            continue
        # A lowered timeout applies to what was learned before it, too.
        items = ", ".join(f"{e.key} expires {min(max(e.expires_s, 1), timeouts[name])}s"
                          for e in entries)
        out.append(f"add element inet {plan.nft.table} {name} {{ {items} }}")
    return "\n".join(out) + ("\n" if out else "")


class Applier:
    """Applies plans, remembering what it applied so the next apply does only
    what differs: a health change is one nft transaction with no routing
    dump. A fresh Applier (the one-shot CLI) reads everything from the kernel.
    `ipr` is the caller's netlink socket (strict_check, so dumps filter by
    protocol in the kernel)."""

    def __init__(self, ipr: IPRoute, flush_conntrack: bool = True,
                 sysctls: Sysctls | None = None, flush_in_background: bool = False) -> None:
        self.ipr = ipr
        self.flush_conntrack = flush_conntrack
        # The daemon's: an apply returns once new connections follow the plan, and
        # the dead uplinks' entries go in a thread of their own (ApplyReport.conntrack_done).
        self.flush_in_background = flush_in_background
        self.sysctls = sysctls or Sysctls()
        self._warned: set[str] = set()  # reverse-path warnings given, by device
        self._digest: str | None = None
        self._live: frozenset[int] | None = None
        self._routing: tuple[frozenset[object], frozenset[object]] | None = None
        self._full_next = False
        self._swept: str | None = None  # the table name old tables of ours were swept for
        self._contents = ""
        self._structure: str | None = None  # the structure of our last apply, without snippets
        self._dead: frozenset[int] | None = None  # marks of uplinks dead at the last apply
        self._dead6: frozenset[int] | None = None  # ... and of those whose IPv6 was
        # Held open: a new libnftables context refills its cache on first use,
        # and a new conntrack socket costs ~10 ms.
        self._tables: dict[str, NftTable] = {}
        self._conntrack = conntrack.ConntrackCleaner()
        self._radvd = Radvd()

    def table(self, name: str) -> NftTable:
        if name not in self._tables:
            self._tables[name] = NftTable(name)
        return self._tables[name]

    def apply(self, plan: Plan) -> ApplyReport:
        started = time.perf_counter()
        proto = plan.route_protocol
        want = (frozenset(plan.routes), frozenset(plan.rules))
        # With the administrator's snippets in it, what the nft step will run is checked
        # (a dry run) before anything changes: a snippet the kernel refuses leaves routes
        # and rules as they were. Our own table needs no such check: it is all or nothing.
        # The drops of the last apply end before this one can bring their uplink
        # back: none may hit a connection this apply lets start.
        self._conntrack.wait()
        mode, text, before_live = self._nft_step(plan)
        if mode == "full" and plan.nft.spec.snippets and (
                error := self.table(plan.nft.table).check(text)) is not None:
            raise ApplyError(self._explain(plan, error))
        d = routing.RoutingDiff()
        if want != self._routing:
            d = routing.diff(routing.owned_routes(self.ipr, proto),
                             routing.owned_rules(self.ipr, proto), plan.routes, plan.rules)
            self._routing = None  # until the whole apply went through
        made = routing.make(self.ipr, d, proto)
        if made.failed:
            refused: dict[int, str] = {}
            for table, why in made.failed:
                refused.setdefault(table, why)
            raise RoutesRefused(refused)
        mode = self._commit_nft(plan, mode, text)
        self._router_sysctls(plan)
        placed = time.perf_counter()
        # Flows of uplinks that died since the last apply; without that memory (a
        # one-shot apply), of those that were live until now.
        left = (plan.dead_marks - self._dead if self._dead is not None
                else plan.dead_marks & before_live)
        left6 = (plan.dead_marks6 - self._dead6 if self._dead6 is not None
                 else plan.dead_marks6 & before_live)
        dropped: frozenset[int] = frozenset()
        dropped6: frozenset[int] = frozenset()
        done: Future[float] | None = None
        if self.flush_conntrack and (left or left6):
            dropped, dropped6 = left, left6
            drops = [(left, plan.mark_mask, socket.AF_INET),
                     (left6, plan.mark_mask, socket.AF_INET6)]
            if self.flush_in_background:
                done = self._conntrack.drop_later(drops)
            else:
                for marks, mask, family in drops:
                    self._conntrack.drop_marked(marks, mask, family)
        cleaned = time.perf_counter()
        broken = routing.brk(self.ipr, d, proto)
        if broken.failed:
            raise ApplyError("; ".join(why for _, why in broken.failed))
        if not d.empty and (routing.owned_routes(self.ipr, proto) != want[0]
                            or routing.owned_rules(self.ipr, proto) != want[1]):
            raise ApplyError("routes or rules differ from the plan after reconcile")
        self._routing, self._dead, self._dead6 = want, plan.dead_marks, plan.dead_marks6
        # After the routes: a host told to prefer a prefix finds it routed.
        if plan.radvd is not None:
            self._radvd.publish(plan.radvd)
        return ApplyReport(mode, made + broken, dropped, left | left6, (placed - started) * 1000,
                           (cleaned - placed) * 1000, dropped6, done)

    def _router_sysctls(self, plan: Plan) -> None:
        """Forwarding on where the plan needs it; a word on rp_filter settings that
        would drop the replies of balanced connections (each device once)."""
        try:
            if plan.forwarding and self.sysctls.enable_forwarding():
                log.info("net.ipv4.ip_forward turned on (flush puts back the value found)")
        except OSError as exc:  # read-only /proc/sys (a container): say so, balance anyway
            if "ip_forward" not in self._warned:
                log.warning("cannot turn on net.ipv4.ip_forward: %s", exc.strerror or exc)
                self._warned.add("ip_forward")
        if (plan.forwarding and plan.nft.spec.ipv6 and self.sysctls.forwarding6() == 0
                and "forwarding6" not in self._warned):
            log.warning("IPv6 balanced with LANs, but net.ipv6.conf.all.forwarding is 0: "
                        "the LANs' IPv6 is not routed (turn it on with accept_ra=2 on "
                        "uplinks that learn their IPv6 route by router advertisement)")
            self._warned.add("forwarding6")
        devices = {u.interface for u in plan.uplinks if u.routed and u.interface}
        for warning in self.sysctls.reverse_path_warnings(sorted(devices - self._warned)):
            log.warning("%s", warning)
        self._warned |= devices

    def _nft_step(self, plan: Plan) -> tuple[str, str, frozenset[int]]:
        """("full" | IN_PLACE | "contents" | "", the transaction, the live set before it)."""
        table = self.table(plan.nft.table)
        if not self._full_next and self._digest == plan.nft.digest and self._live is not None:
            # Only the sets and maps that changed: a retune of the measured methods
            # rewrites one weight map, not every set of the table.
            changed = changed_blocks(self._contents, plan.nft.contents_text)
            if not changed:
                return "", "", self._live
            return "contents", changed, self._live
        before = table.read_brief(sticky=False)
        if before is not None and before.digest is None:
            raise ApplyError(foreign_table(plan.nft.table))
        before_live = before.live if before is not None else frozenset()
        if not self._full_next and before is not None and before.digest == plan.nft.digest:
            return "contents", plan.nft.contents_text, before_live
        update = self._in_place(plan, before)
        if update is not None:
            # Sets made again lose their entries: the sticky ones are carried over.
            again = {name for kind, name in update.changed
                     if kind == "set" and name in plan.nft.sticky_sets}
            if again:
                before = table.read_brief()
            return IN_PLACE, update.text + restore_sticky(before, plan, again), before_live
        return "full", self._full_transaction(plan), before_live

    def _full_transaction(self, plan: Plan) -> str:
        # The old table's sets only when the new one has sticky entries to take over.
        before = self.table(plan.nft.table).read_brief() if plan.nft.sticky_sets else None
        return plan.nft.full_transaction() + restore_sticky(before, plan)

    def _in_place(self, plan: Plan, before: TableState | None) -> Restructure | None:
        """The change of structure done in place, when the kernel holds the structure
        this applier made last (no snippets in it, the administrator's own text)."""
        if (self._full_next or before is None or self._structure is None
                or before.digest != self._digest or plan.nft.snippets_text):
            return None
        return restructure(plan.nft.table, (self._structure, self._contents),
                           (plan.nft.structure, plan.nft.contents_text))

    def _commit_nft(self, plan: Plan, mode: str, text: str) -> str:
        """Run the nft step as one transaction and read back what it must have done;
        the mode it ran in (an in-place change the kernel refuses is done in full)."""
        if not mode:
            return mode
        table = self.table(plan.nft.table)
        try:
            table.run(text)
        except ApplyError as exc:
            if mode != IN_PLACE:
                raise
            # Nothing changed (all or nothing): the whole table, then.
            log.info("the change of structure in place was refused (%s); replacing the "
                     "whole table", exc)
            mode = "full"
            table.run(self._full_transaction(plan))
        # The transaction went through whole or not at all: read back only what it
        # changed that someone else could have changed since. A full or in-place one
        # made the digest chain a moment ago; a contents one onto a table not known
        # to be this plan's checks its digest. The live set, always.
        known = mode in ("full", IN_PLACE) or self._digest == plan.nft.digest
        if not known and digest_of(table.chain_names() or frozenset()) != plan.nft.digest:
            self._digest = None
            raise ApplyError("the nft table differs from the plan after apply")
        after_live = table.read_live()
        if mode == "full":
            self._full_next = False
            if self._swept != plan.nft.table:  # kernel.table renamed: the old one goes
                for old in table.others_of_ours():
                    NftTable(old).delete()
                self._swept = plan.nft.table
        if after_live != plan.live_marks:
            self._digest = None
            raise ApplyError("the nft table's live uplinks differ from the plan after apply")
        self._digest, self._live, self._contents = plan.nft.digest, after_live, plan.nft.contents_text
        self._structure = None if plan.nft.snippets_text else plan.nft.structure
        return mode

    def _explain(self, plan: Plan, error: str) -> str:
        """Which snippet (file:line) the kernel refuses, when one is to blame."""
        table = self.table(plan.nft.table)
        snippets = plan.nft.spec.snippets
        if not snippets or table.check(plan.nft.structure + plan.nft.contents_text) is not None:
            return f"nft refused the transaction: {error}"
        # Included rather than pasted, nft names the file and line it trips on.
        for count in range(1, len(snippets) + 1):
            includes = "".join(f'include "{path}"\n' for path, _ in snippets[:count])
            found = table.check(plan.nft.structure + includes + plan.nft.contents_text)
            if found is not None:
                path = snippets[count - 1][0]
                lines = [line for line in found.splitlines() if not line.startswith("In file")]
                return f"snippet {path} refused: {chr(10).join(lines)}"
        return f"nft refused the transaction: {error}"

    def drift(self, plan: Plan) -> list[str]:
        """How what we own in the kernel differs from `plan`, one phrase per difference."""
        out = []
        name = plan.nft.table
        # Chain names and the live set: a listing of sets or of the whole table makes
        # nft fetch every map's elements (a second with 5,000 rules), and this runs
        # every verify_interval. A set that rules use cannot be deleted; nftables'
        # notifications name any change to the table as it happens.
        state = self.table(name).read_brief(sticky=False)
        if state is None:
            out.append(f"table inet {name} is gone")
        elif state.digest != plan.nft.digest:
            out.append(f"table inet {name} holds another ruleset")
        else:
            chains = {n for kind, n in blocks(plan.nft.structure) or {} if kind == "chain"}
            missing = sorted(chains - state.chains)
            if missing:
                out.append(f"table inet {name} lacks {', '.join(missing[:4])}"
                           f"{', ...' if len(missing) > 4 else ''}")
            if state.live != plan.live_marks:
                out.append(f"table inet {name}'s live set changed")
        out += routing.drift(self.ipr, plan.routes, plan.rules, plan.route_protocol)
        return out

    def kernel_ids(self, table: str, chains: Mapping[str, str], layout: Layout) -> dict[str, int]:
        """The uplink ids our table in the kernel holds (`chains`: restore chain -> name)."""
        state = self.table(table).read()
        return ids_in_kernel(state.restore, chains, layout) if state is not None else {}

    def close(self) -> None:
        self._conntrack.close()

    def replace_next(self) -> None:
        """Make the whole table again at the next apply, rather than change it in
        place (what is known of routes and rules stays known)."""
        self._full_next = True

    def forget(self, full: bool = False) -> None:
        """Distrust the memory (after an error, or when someone else changed things);
        `full`: replace the whole table at the next apply, whatever it looks like."""
        self._digest = self._live = None
        self._routing = None
        self._contents = ""
        self._full_next = self._full_next or full


def flush(ipr: IPRoute, table_name: str, route_protocol: int
          ) -> tuple[bool, routing.RoutingChanges]:
    """Remove everything we installed: our table (only if it is ours), our routes, our rules."""
    table = NftTable(table_name)
    state = table.read_owner()
    foreign = state is not None and state.digest is None
    # The table first, so nothing is marked for routes about to go.
    removed = table.delete() if not foreign else False
    changes = routing.reconcile(ipr, (), (), route_protocol)
    restored = Sysctls().restore_forwarding()
    if restored is not None:
        log.info("net.ipv4.ip_forward put back to %d", restored)
    if foreign:
        raise ApplyError(foreign_table(table_name) + f" ({len(changes.removed)} routes and "
                         "rules of ours were removed)")
    return removed, changes
