"""The reconciler: one task that turns requests into applies, keeps what we
own in the kernel as applied, and never gives up.

    request(cause) ──┐
    verify(cause)  ──┼─▶ debounce ─▶ round: flush what a reload left behind,
    repair(cause)  ──┘                       reconcile (observe ▶ decide ▶ apply),
    periodic read-back, retry timers         read back, repair drift

- Requests are merged while a round runs; each round says why it ran.
- An uplink whose routes the kernel refuses leaves the plan (no route, no
  rules, no new connections) and is retried with backoff; the others apply.
- Drift (our table, routes or rules changed by someone else) is repaired by a
  whole-table replace and a full routing reconcile, with one log line saying
  what drifted.
- A failed round is logged (no traceback for what the kernel refused) and
  retried with backoff; the daemon never dies of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from nmbalance.aio import wait_event
from nmbalance.core.backoff import RefusedRoutes, delay
from nmbalance.core.facts import Facts
from nmbalance.core.plan import Plan
from nmbalance.daemon.kernel import Kernel
from nmbalance.dataplane.apply import ApplyReport, RoutesRefused, refused_uplinks
from nmbalance.errors import ApplyError, NmbalanceError

log = logging.getLogger(__name__)
ERROR_RETRY_FIRST = 1.0
ERROR_RETRY_MAX = 30.0
# Another program fighting us over the table must not make us spin: past
# this many repairs in REPAIR_WINDOW seconds, repairs wait REPAIR_PAUSE.
REPAIR_BURST = 10
REPAIR_WINDOW = 60.0
REPAIR_PAUSE = 5.0


class Planner(Protocol):
    """What the reconciler asks of the daemon."""

    @property
    def flush_conntrack(self) -> bool: ...

    async def observe(self) -> Facts:
        """Fresh facts: the kernel's, what the managers say, and health."""
        ...

    def decide(self, facts: Facts, refused: Mapping[str, str]) -> Plan: ...

    async def before_apply(self, plan: Plan) -> None:
        """Runs the pre-apply hooks; the apply waits for them."""
        ...

    def applied(self, plan: Plan, report: ApplyReport, why: str, quiet: bool) -> None:
        """`quiet`: the reconciler logs this apply itself (a repair)."""
        ...


def _why(causes: list[str]) -> str:
    unique = list(dict.fromkeys(causes))
    more = f" and {len(unique) - 3} more" if len(unique) > 3 else ""
    return ", ".join(unique[:3]) + more


class Reconciler:
    def __init__(self, kernel: Kernel, planner: Planner, *,
                 debounce: Callable[[], float], verify_interval: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kernel = kernel
        self.planner = planner
        self.clock = clock
        self._debounce = debounce  # seconds, read at each round (reload may change it)
        self._verify_interval = verify_interval  # seconds; 0: events only
        self.plan: Plan | None = None
        self.refused = RefusedRoutes()
        self.failures = 0
        self.last_error = ""
        self._causes: list[str] = []
        self._verify: list[str] = []
        self._repair: list[str] = []
        self._flushes: list[tuple[str, int]] = []
        self._wake = asyncio.Event()
        self._requested = 0
        self._done = 0
        self._results: dict[int, str] = {}  # round (its generation) -> its error or ""
        self._finished = asyncio.Condition()
        self._retry_at: float | None = None
        self._next_read_back: float | None = None
        self._repairs: list[float] = []  # when recent repairs ran
        self.repairs = 0  # since the start, for the metrics
        self._repair_after: float | None = None

    # --- asking ------------------------------------------------------------------------------
    def _ask(self, into: list[str], cause: str) -> int:
        into.append(cause)
        self._requested += 1
        self._wake.set()
        return self._requested

    def request(self, cause: str) -> int:
        """Reconcile: facts may have changed."""
        return self._ask(self._causes, cause)

    def verify(self, cause: str) -> int:
        """Read back what we own; repair it if it differs from the plan."""
        return self._ask(self._verify, cause)

    def repair(self, cause: str) -> int:
        """Someone changed what we own (`cause` says what): put it back whole."""
        return self._ask(self._repair, cause)

    def flush_first(self, table: str, route_protocol: int) -> None:
        """Before the next apply, remove what an old kernel setting installed."""
        self._flushes.append((table, route_protocol))

    async def wait(self, generation: int) -> None:
        """Until the round that served `generation` ended; its error, if it failed."""
        async with self._finished:
            await self._finished.wait_for(lambda: self._done >= generation)
            served = min((g for g in self._results if g >= generation), default=None)
            error = self._results.get(served, "") if served is not None else ""
        if error:
            raise ApplyError(error)

    # --- the task ----------------------------------------------------------------------------
    def _deadline(self, now: float) -> float | None:
        times = [t for t in (self.refused.deadline(now), self._retry_at, self._next_read_back,
                             self._repair_after) if t is not None]
        return min(times) if times else None

    async def run(self) -> None:
        self.request("start")
        interval = self._verify_interval()
        self._next_read_back = self.clock() + interval if interval else None
        while True:
            deadline = self._deadline(self.clock())
            timeout = None if deadline is None else max(deadline - self.clock(), 0.0)
            await wait_event(self._wake, timeout)
            if self._wake.is_set() and (debounce := self._debounce()):
                await asyncio.sleep(debounce)
            self._wake.clear()
            generation = self._requested
            causes, self._causes = self._causes, []
            verify, self._verify = self._verify, []
            repair, self._repair = self._repair, []
            now = self.clock()
            due = [n for n, e in self.refused.entries.items() if e.retry_at <= now]
            if due:
                causes.append(f"retrying the routes of {', '.join(due)}")
            if self._retry_at is not None and self._retry_at <= now:
                causes.append("retrying after a failed apply")
            if self._next_read_back is not None and self._next_read_back <= now:
                verify.append("periodic read-back")
            interval = self._verify_interval()
            if verify or self._next_read_back is None:
                self._next_read_back = now + interval if interval else None
            repair, verify = self._pace_repairs(repair, verify, now)
            if not (causes or verify or repair or self._flushes):
                continue
            await self._serve(generation, causes, verify, repair)

    def _pace_repairs(self, repair: list[str], verify: list[str], now: float
                      ) -> tuple[list[str], list[str]]:
        """Repairs to run now; ones held back wait (with any read-back) for later."""
        self._repairs = [t for t in self._repairs if now - t < REPAIR_WINDOW]
        if self._repair_after is not None and self._repair_after > now:
            self._repair += repair
            self._verify += verify
            return [], []
        self._repair_after = None
        if (repair or verify) and len(self._repairs) >= REPAIR_BURST:
            self._repair_after = now + REPAIR_PAUSE
            log.warning("what we own in the kernel was changed %d times in the last %g s "
                        "(%s); repairing at most every %g s", len(self._repairs),
                        REPAIR_WINDOW, _why(repair or verify), REPAIR_PAUSE)
            self._repairs.clear()
        return repair, verify

    async def _serve(self, generation: int, causes: list[str], verify: list[str],
                     repair: list[str]) -> None:
        error = ""
        try:
            await self._round(causes, verify, repair)
            self.failures, self._retry_at, self.last_error = 0, None, ""
        except Exception as exc:  # the daemon outlives any failed round, and retries it
            self.failures += 1
            wait = delay(self.failures, ERROR_RETRY_FIRST, ERROR_RETRY_MAX)
            self._retry_at = self.clock() + wait
            error = self.last_error = str(exc) or type(exc).__name__
            expected = isinstance(exc, NmbalanceError | OSError)
            log.error("apply failed (%s), retrying in %g s: %s", _why(causes + repair + verify),
                      wait, error, exc_info=not expected)
            with contextlib.suppress(Exception):
                await self.kernel.forget()
        async with self._finished:
            self._done = generation
            self._results[generation] = error
            while len(self._results) > 16:  # a waiter only needs the recent ones
                del self._results[min(self._results)]
            self._finished.notify_all()

    async def _round(self, causes: list[str], verify: list[str], repair: list[str]) -> None:
        for table, proto in self._flushes:
            removed = await self.kernel.flush(table, proto)
            log.info("removed what the previous kernel settings installed: table inet %s, "
                     "%d routes and rules (proto %d)", table, removed, proto)
        self._flushes = []
        started = time.perf_counter()
        if repair:
            await self.kernel.forget(full=True)
        report = None
        if causes or repair or self.plan is None:
            report = await self._reconcile(causes or repair or ["start"], force=bool(repair),
                                           quiet=bool(repair) and not causes)
        drift = list(repair)
        if verify and not repair and self.plan is not None:
            drift = await self.kernel.drift(self.plan)
            if drift:
                await self.kernel.forget(full=True)
                report = await self._reconcile([f"drift ({_why(verify)})"], force=True,
                                               quiet=True)
        if drift:
            self.repairs += 1
            self._repairs.append(self.clock())
            how = f" ({report.nft_mode or 'routes'}, {report.kernel_ms:.1f} ms in the kernel)" \
                if report is not None else ""  # a repair always rewrites table or routes
            log.info("drift repaired in %.0f ms%s: %s", (time.perf_counter() - started) * 1000,
                     how, "; ".join(drift))

    async def _reconcile(self, causes: list[str], force: bool, quiet: bool = False
                         ) -> ApplyReport | None:
        """Observe, decide, apply; the report of what was applied (None: nothing to)."""
        facts = await self.planner.observe()
        refused = self.refused.active(self.clock())
        self.refused.keep_only(u.name for u in facts.uplinks)
        hooks_ran = False
        for _ in range(len(facts.uplinks) + 1):
            plan = self.planner.decide(facts, refused)
            self.refused.drop_due(self.clock(), (u.name for u in plan.uplinks if u.routed))
            if plan == self.plan and not force:
                return None
            if not hooks_ran:
                await self.planner.before_apply(plan)
                hooks_ran = True
            try:
                report = await self.kernel.apply(plan, self.planner.flush_conntrack)
            except RoutesRefused as exc:
                newly = refused_uplinks(plan, exc)
                for name, why in newly.items():
                    entry = self.refused.refused(name, why, self.clock())
                    log.warning("%s out of rotation: %s; retrying in %g s", name, why,
                                delay(entry.failures))
                refused = {**refused, **newly}
                continue
            for name in self.refused.accepted(u.name for u in plan.uplinks if u.routed):
                log.info("%s: the kernel took its routes", name)
            self.plan = plan
            self.planner.applied(plan, report, _why(causes), quiet)
            return report
        raise ApplyError("routes refused on every attempt")
