"""The daemon with stand-ins for the kernel, its events and the probes: no
root, no namespaces. What the kernel refuses, what drifts and what fails is
scripted here; the lab tests do the same against the real kernel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from nmbalance.config import load_config_text
from nmbalance.config.model import Config
from nmbalance.core.facts import Facts, GatewaySource, UplinkFacts
from nmbalance.core.plan import Plan, UplinkStatus
from nmbalance.daemon.main import Daemon
from nmbalance.dataplane.apply import ApplyReport, RoutesRefused
from nmbalance.dataplane.routing import RoutingChanges
from nmbalance.errors import ApplyError
from nmbalance.inet import AnyAddress
from nmbalance.sources.kernel_watch import EventKind, KernelEvent
from nmbalance.sources.probes import RoundResult

CONFIG = """
snippets_dir = ""
[[uplink]]
name = "ISP1"
interface = "wan1"
[[uplink]]
name = "ISP2"
interface = "wan2"
[[uplink]]
name = "ISP3"
interface = "wan3"
[daemon]
hooks_dir = ""
debounce_ms = 0
verify_interval = 0
"""


def uplink(n: int, **kw: object) -> UplinkFacts:
    base: dict[str, object] = dict(
        name=f"ISP{n}", interface=f"wan{n}", present=True, carrier=True,
        addresses=(IPv4Interface(f"10.10{n}.0.2/24"),), gateway=IPv4Address(f"10.10{n}.0.1"),
        gateway_source=GatewaySource.KERNEL)
    base.update(kw)
    return UplinkFacts(**base)  # type: ignore[arg-type]


class FakeKernel:
    """A kernel of plain values: what was applied, and what it is told to refuse."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.applied: list[Plan] = []
        self.refuse: dict[int, str] = {}  # routing table -> the kernel's reason
        self.fail: list[Exception] = []  # raised by the next applies, in order
        self.drifted: list[str] = []
        self.forgotten: list[bool] = []
        self.ids: dict[str, int] = {}
        self.counted: dict[str, tuple[int, int]] = {}  # rx, tx bytes by interface
        self.counters_fail = False
        self.new: dict[str, int] = {}  # our table's named counters

    async def new_connections(self, table: str) -> dict[str, int] | None:
        return dict(self.new)

    async def counters(self) -> dict[str, tuple[int, int]]:
        if self.counters_fail:
            raise OSError("netlink says no")
        return dict(self.counted)

    async def snapshot(self, config: Config, interfaces: Mapping[str, str]) -> Facts:
        return self.facts

    async def kernel_ids(self, config: Config) -> dict[str, int]:
        return dict(self.ids)

    async def apply(self, plan: Plan, flush_conntrack: bool) -> ApplyReport:
        if self.fail:
            raise self.fail.pop(0)
        refused = {r.table: self.refuse[r.table] for r in plan.routes if r.table in self.refuse}
        if refused:
            raise RoutesRefused(refused)
        self.applied.append(plan)
        self.drifted = []
        return ApplyReport("full", RoutingChanges(added=("x",)), frozenset(), frozenset())

    async def drift(self, plan: Plan) -> list[str]:
        return list(self.drifted)

    async def flush(self, table: str, route_protocol: int) -> int:
        return 0

    async def forget(self, full: bool = False) -> None:
        self.forgotten.append(full)

    async def close(self) -> None:
        pass


class FakeWatch:
    def __init__(self) -> None:
        self.own_proto = 211
        self.queue: asyncio.Queue[KernelEvent] = asyncio.Queue()

    async def events(self) -> AsyncIterator[KernelEvent]:
        while True:
            yield await self.queue.get()

    def watch_table(self, table: str) -> None:
        pass

    def close(self) -> None:
        pass


class Answering:
    """Every probe answers in 5 ms."""

    async def round(self, targets: Sequence[AnyAddress], source: AnyAddress, timeout: float,
                    reliability: int) -> RoundResult:
        return RoundResult(len(targets), reliability, 5.0, "")

    def close(self) -> None:
        pass


Body = Callable[[Daemon, FakeKernel, FakeWatch], Coroutine[Any, Any, None]]


def run_daemon(body: Body, config: str = CONFIG, facts: Facts | None = None,
               kernel: FakeKernel | None = None, path: str = "test.toml") -> FakeKernel:
    async def main() -> FakeKernel:
        k = kernel or FakeKernel(facts or Facts(uplinks=tuple(uplink(n) for n in (1, 2, 3))))
        watch = FakeWatch()
        daemon = Daemon(path, load_config_text(config, path), kernel=k, watch=watch,
                        prober=lambda workers: Answering(), bus=None)
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(body(daemon, k, watch), 10)
        finally:
            daemon.stop()
            assert await asyncio.wait_for(task, 5) == 0
        return k
    return asyncio.run(main())


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def test_a_refused_route_takes_only_that_uplink_out_and_is_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    kernel = FakeKernel(Facts(uplinks=tuple(uplink(n) for n in (1, 2, 3))))
    kernel.refuse[7702] = "cannot add route 0.0.0.0/0 via 10.102.0.1: Nexthop has invalid gateway"

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        plan = k.applied[-1]
        isp2 = plan.uplink("ISP2")
        assert isp2.status is UplinkStatus.ERROR and "invalid gateway" in isp2.reason
        assert not isp2.routed and all(r.table != 7702 for r in plan.routes)
        assert plan.live_marks == {0x100, 0x300}  # no new connections while its route is missing
        assert [u.share for u in plan.uplinks] == [0.5, 0.0, 0.5]
        # The kernel takes it at a retry (after 1 s): back in the plan.
        del k.refuse[7702]
        await until(lambda: k.applied[-1].uplink("ISP2").status is UplinkStatus.ACTIVE, 4)
        assert k.applied[-1].live_marks == {0x100, 0x200, 0x300}

    run_daemon(body, kernel=kernel)
    text = caplog.text
    assert "ISP2 out of rotation: cannot add route" in text and "retrying in 1 s" in text
    assert "ISP2: the kernel took its routes" in text
    assert "retrying the routes of ISP2" in text
    assert "Traceback" not in text


def test_refusals_back_off() -> None:
    kernel = FakeKernel(Facts(uplinks=tuple(uplink(n) for n in (1, 2, 3))))
    kernel.refuse[7703] = "no"

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: daemon.reconciler.refused.entries.get("ISP3") is not None
                    and daemon.reconciler.refused.entries["ISP3"].failures >= 2, 4)
        entry = daemon.reconciler.refused.entries["ISP3"]
        assert entry.retry_at - daemon.clock() > 1.0  # 2 s after the second refusal

    run_daemon(body, kernel=kernel)


def test_a_failing_first_apply_does_not_stop_the_daemon(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    kernel = FakeKernel(Facts(uplinks=tuple(uplink(n) for n in (1, 2, 3))))
    kernel.fail = [ApplyError("nft refused the transaction: Error: something")]

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied), 4)
        assert daemon.plan is k.applied[-1]

    run_daemon(body, kernel=kernel)
    assert "apply failed (start), retrying in 1 s: nft refused the transaction" in caplog.text
    assert "running: not applied: nft refused" in caplog.text
    assert "retrying after a failed apply" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_change_to_our_table_by_someone_else_is_repaired_whole(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        first = len(k.applied)
        watch.queue.put_nowait(KernelEvent(EventKind.NFT, "table inet nmbalance: table deleted "
                                                          "by nft (pid 42)", owned=True))
        await until(lambda: len(k.applied) > first)
        assert True in k.forgotten  # a whole-table replace, not just its contents
        assert k.applied[-1] == k.applied[first - 1]  # the same plan, put back

    run_daemon(body)
    assert ("drift repaired in" in caplog.text
            and "table inet nmbalance: table deleted by nft (pid 42)" in caplog.text)


def test_an_event_on_our_routes_reads_back_and_repairs_what_differs(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        first = len(k.applied)
        # Our own echo: the read-back finds nothing to do.
        watch.queue.put_nowait(KernelEvent(EventKind.ROUTE, "added in table 7701", owned=True))
        await asyncio.sleep(0.1)
        assert len(k.applied) == first
        k.drifted = ["1 missing rule (7701: from all fwmark 0x100/0xff00 lookup 7701)"]
        watch.queue.put_nowait(KernelEvent(EventKind.RULE, "deleted", owned=True))
        await until(lambda: len(k.applied) > first)

    run_daemon(body)
    assert "drift repaired in" in caplog.text and "1 missing rule (7701" in caplog.text


def test_the_periodic_read_back_finds_drift_no_event_told_of() -> None:
    config = CONFIG.replace("verify_interval = 0", "verify_interval = 0.2")

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        first = len(k.applied)
        k.drifted = ["table inet nmbalance is gone"]
        await until(lambda: len(k.applied) > first, 3)

    run_daemon(body, config=config)


def test_someone_fighting_us_is_repaired_at_a_bounded_rate(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        first = len(k.applied)
        for _ in range(40):
            watch.queue.put_nowait(KernelEvent(EventKind.NFT, "rules changed by x (pid 1)",
                                               owned=True))
            await asyncio.sleep(0.02)
        assert len(k.applied) - first <= 11

    run_daemon(body)
    assert "repairing at most every 5 s" in caplog.text


def test_refresh_returns_at_once_and_is_served_later() -> None:
    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        served = daemon.reconciler._done
        await asyncio.wait_for(daemon.refresh("up wan1"), 0.05)
        await until(lambda: daemon.reconciler._done > served)

    run_daemon(body)


def test_reordering_uplinks_on_reload_keeps_each_uplinks_mark(tmp_path: Any) -> None:
    path = tmp_path / "nmbalance.toml"
    path.write_text(CONFIG)
    reordered = CONFIG.replace('name = "ISP1"\ninterface = "wan1"', "@1").replace(
        'name = "ISP3"\ninterface = "wan3"', 'name = "ISP1"\ninterface = "wan1"').replace(
        "@1", 'name = "ISP3"\ninterface = "wan3"')
    assert reordered.index("ISP3") < reordered.index("ISP1")

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        before = {u.name: (u.mark, u.table) for u in k.applied[-1].uplinks}
        path.write_text(reordered.replace('[[uplink]]\nname = "ISP2"\ninterface = "wan2"\n', "")
                        + '[[uplink]]\nname = "ISP4"\ninterface = "wan4"\n')
        await daemon.reload()
        after = {u.name: (u.mark, u.table) for u in k.applied[-1].uplinks}
        assert after["ISP1"] == before["ISP1"] and after["ISP3"] == before["ISP3"]
        # A new uplink does not take the id of one just removed (its flows may linger).
        assert after["ISP4"] == (0x400, 7704)

    run_daemon(body, path=str(path))


def test_ids_are_read_back_from_the_kernel_at_start() -> None:
    kernel = FakeKernel(Facts(uplinks=tuple(uplink(n) for n in (1, 2, 3))))
    kernel.ids = {"ISP1": 3, "ISP3": 1}

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        marks = {u.name: u.mark for u in k.applied[-1].uplinks}
        assert marks == {"ISP1": 0x300, "ISP2": 0x200, "ISP3": 0x100}

    run_daemon(body, kernel=kernel)


def test_a_stop_in_the_same_instant_as_a_reload_still_stops(tmp_path: Any) -> None:
    """Python 3.11's wait_for and TaskGroup can lose a cancellation that lands
    with their own wake-up: SIGTERM right after SIGHUP once hung the daemon."""
    config = CONFIG.replace('interface = "wan1"', 'interface = "wan1"\nprobe = ["192.0.2.1"]')
    path = tmp_path / "nmbalance.toml"
    path.write_text(config)

    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        await until(lambda: bool(k.applied))
        for _ in range(20):
            await asyncio.sleep(0.05)
            daemon.reconciler.request("x")
            daemon.probes.restart()
        daemon._reload.set()
        daemon.stop()  # run_daemon then waits at most 5 s for run() to return

    run_daemon(body, config=config, path=str(path))


OVERFLOW = 'mode = "overflow"\n' + CONFIG.replace(
    'interface = "wan1"', 'interface = "wan1"\ncapacity_mbps = 10').replace(
    'interface = "wan2"', 'interface = "wan2"\ncapacity_mbps = 10').replace(
    'interface = "wan3"', 'interface = "wan3"\ncapacity_mbps = 10')


def test_overflow_follows_the_counters_and_survives_a_failed_read() -> None:
    async def body(daemon: Daemon, k: FakeKernel, watch: FakeWatch) -> None:
        k.counted = {f"wan{n}": (0, 0) for n in (1, 2, 3)}
        # Equal weights: ISP1 first, the config's order.
        await until(lambda: daemon.plan is not None and daemon.plan.uplink("ISP1").share == 1.0)
        k.counters_fail = True
        await asyncio.sleep(0.6)
        k.counters_fail = False
        total = 0
        while daemon.plan.uplink("ISP1").share == 1.0:  # 20 Mbit/s into a 10 Mbit/s uplink
            total += 1_250_000
            k.counted["wan1"] = (total, 0)
            await asyncio.sleep(0.5)
            assert total < 20 * 1_250_000, "never moved"
        assert daemon.plan.uplink("ISP2").share == 1.0
        assert "ISP1" in daemon.choice_why["mode"] and "full" in daemon.choice_why["mode"]

    run_daemon(body, config=OVERFLOW)
