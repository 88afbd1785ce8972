"""nmbalance with a real systemd-networkd managing two DHCP uplinks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import Lab, wait_for
from labkit.managers import Bus, Networkd, set_router
from tests.integration.watch import SignalWatch


@pytest.fixture(scope="module")
def ndlab() -> Iterator[tuple[Lab, Bus]]:
    with Lab(isps=2, dhcp=True) as lab:
        bus = Bus(lab)
        Networkd(lab, bus).wait_configured(1, 2)
        yield lab, bus


@pytest.fixture
def daemon(ndlab: tuple[Lab, Bus]) -> Iterator[DaemonProcess]:
    lab, _ = ndlab
    config = lab.write(lab.config(weights=(1,), health={"interval_ms": 200, "hold_time": 1}))
    proc = DaemonProcess(lab, config)
    proc.wait_for("running:")
    yield proc
    proc.stop()
    lab.nmbalance("flush", "-c", config)


def uplinks(lab: Lab) -> dict[str, dict[str, object]]:
    out = json.loads(lab.nmbalance("status", "--json").stdout)
    return {u["Name"]: u for u in out["uplinks"]}


def test_gateways_come_from_networkd(ndlab: tuple[Lab, Bus], daemon: DaemonProcess) -> None:
    lab, _ = ndlab
    assert "following networkd" in daemon.text()
    for n in (1, 2):
        u = uplinks(lab)[f"ISP{n}"]
        assert u["Gateway"] == f"10.10{n}.0.1" and u["GatewaySource"] == "networkd", u
    tally = lab.connections(300)
    assert tally.get(1, 0) > 0 and tally.get(2, 0) > 0 and sum(tally.values()) == 300


def test_a_new_router_at_renewal_is_followed(ndlab: tuple[Lab, Bus], daemon: DaemonProcess) -> None:
    lab, bus = ndlab
    lab.ip(lab.isp(1), "addr", "add", "10.101.0.254/24", "dev", "rtr")

    def table() -> str:
        return lab.ip(lab.rtr, "route", "show", "table", "7701").stdout

    try:
        # networkd tells only "configuring -> configured"; DescribeLink has the router.
        with SignalWatch(bus.address, "org.freedesktop.network1", needle="configured") as watch:
            set_router(lab, 1, "10.101.0.254")
            assert wait_for(lambda: "via 10.101.0.254" in table(), 30), daemon.text()
            followed = time.monotonic()
            signalled = watch.wait(timeout=1)
        assert followed - signalled < 1.0
        assert uplinks(lab)["ISP1"]["Gateway"] == "10.101.0.254"
    finally:
        set_router(lab, 1, "10.101.0.1")
        assert wait_for(lambda: "via 10.101.0.1 " in table(), 30)
        lab.ip(lab.isp(1), "addr", "del", "10.101.0.254/24", "dev", "rtr")


def test_carrier_loss_and_return(ndlab: tuple[Lab, Bus], daemon: DaemonProcess) -> None:
    lab, _ = ndlab
    mark = daemon.mark()
    lab.carrier(2, False)
    daemon.wait_for(r"applied .*ISP2 down", after=mark)
    assert lab.connections(100) == {1: 100}
    lab.carrier(2, True)
    daemon.wait_for(r"applied .*ISP2 active", after=mark, timeout=30)
    assert uplinks(lab)["ISP2"]["GatewaySource"] == "networkd"
