"""nmbalance with a real systemd-networkd managing two DHCP uplinks."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import Lab, wait_for
from labkit.managers import Bus, Networkd, nmbalance_wrapper, set_router
from tests.integration.watch import SignalWatch


@pytest.fixture(scope="module")
def networkd() -> Iterator[Networkd]:
    with Lab(isps=2, dhcp=True) as lab:
        nd = Networkd(lab, Bus(lab), ipv6=(1,))
        nd.wait_configured(1, 2)
        yield nd


@pytest.fixture
def ndlab(networkd: Networkd) -> tuple[Lab, Bus]:
    return networkd.lab, networkd.bus


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
    return {u["name"]: u for u in out["uplinks"]}


def test_gateways_come_from_networkd(ndlab: tuple[Lab, Bus], daemon: DaemonProcess) -> None:
    lab, _ = ndlab
    assert "following networkd" in daemon.text()
    for n in (1, 2):
        u = uplinks(lab)[f"ISP{n}"]
        assert u["gateway"] == f"10.10{n}.0.1" and u["gateway_source"] == "networkd", u
    # IPv6 from DescribeLink's routes of family 10, shown beside IPv4.
    assert wait_for(lambda: uplinks(lab)["ISP1"]["gateway_source6"] == "networkd", 10), \
        uplinks(lab)["ISP1"]
    assert uplinks(lab)["ISP1"]["gateway6"] == "2001:db8:101::1"
    assert uplinks(lab)["ISP2"]["gateway6"] is None
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
        assert uplinks(lab)["ISP1"]["gateway"] == "10.101.0.254"
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
    assert uplinks(lab)["ISP2"]["gateway_source"] == "networkd"


def test_networkd_dispatcher_script_applies_or_pokes_the_daemon(networkd: Networkd) -> None:
    lab, bus = networkd.lab, networkd.bus
    config = lab.write(lab.config(weights=(1,), health={"interval_ms": 200, "hold_time": 1}),
                       "dispatch.toml")
    scripts = lab.workdir / "networkd-dispatcher"
    for state in ("routable", "degraded", "carrier", "no-carrier", "off", "configured"):
        (scripts / f"{state}.d").mkdir(parents=True, exist_ok=True)
        target = scripts / f"{state}.d" / "50-nmbalance"
        shutil.copy("dispatcher/50-nmbalance-networkd", target)
        target.chmod(0o755)
    bin_dir = lab.workdir / "dispatcher-bin"
    nmbalance_wrapper(lab, bus, config, bin_dir)
    networkd.start_dispatcher(scripts, bin_dir)
    time.sleep(1)
    lab.nmbalance("flush", "-c", config)
    assert "nmbalance" not in lab.sh(lab.rtr, "nft", "list", "tables").stdout

    def bounce() -> None:
        lab.carrier(1, False)
        time.sleep(0.5)
        lab.carrier(1, True)

    try:
        bounce()  # no daemon: the script applies once
        assert wait_for(lambda: "table inet nmbalance" in lab.sh(
            lab.rtr, "nft", "list", "tables").stdout, 20), (networkd.dir / "dispatcher.log").read_text()
        daemon = DaemonProcess(lab, config)
        try:
            daemon.wait_for("running:")
            mark = daemon.mark()
            bounce()  # a daemon runs: the script only asks it to refresh
            daemon.wait_for(r"refresh requested: networkd-[a-z-]+ wan1", after=mark, timeout=20)
        finally:
            daemon.stop()
    finally:
        lab.nmbalance("flush", "-c", config)


def test_doctor_reads_networkds_own_config(ndlab: tuple[Lab, Bus], daemon: DaemonProcess,
                                           networkd: Networkd) -> None:
    """doctor reads networkd.conf as networkd sees it (its mount namespace, found by
    its bus name's pid): ManageForeign* on would remove our rules and routes."""
    lab, _ = ndlab
    path = lab.workdir / "nmbalance.toml"

    def check() -> dict[str, str]:
        result = lab.nmbalance("doctor", "-c", str(path), "--json")
        found: dict[str, str] = {c["name"]: c for c in json.loads(result.stdout)}["networkd"]
        return found

    assert check()["verdict"] == "pass", check()
    conf = networkd.dir / "networkd.conf"
    kept = conf.read_text()
    try:
        conf.write_text("[Network]\nManageForeignRoutes=no\n")  # rules: the default, yes
        found = check()
        assert found["verdict"] == "fail", found
        assert "ManageForeignRoutingPolicyRules" in found["why"]
        assert "ManageForeignRoutingPolicyRules=no" in found["fix"]
    finally:
        conf.write_text(kept)
