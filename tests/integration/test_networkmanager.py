"""nmbalance with a real NetworkManager managing two DHCP uplinks (dnsmasq at
each ISP), on a private system bus, all inside the lab's namespaces.

ISP1 is an ordinary connection (NetworkManager installs its default route);
ISP2 is never-default and named in our config by its NetworkManager
connection id, so only NetworkManager's DHCP lease can tell its gateway."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import Lab, isp_probe, wait_for
from labkit.managers import Bus, NetworkManager, dns6, nmbalance_wrapper, set_router
from tests.integration.watch import SignalWatch

CONFIG = f"""\
mode = "weighted"
snippets_dir = ""
[health]
interval_ms = 200
hold_time = 1
[[uplink]]
name = "ISP1"
interface = "wan1"
probe = ["{isp_probe(1)}"]
[[uplink]]
name = "ISP2"
connection = "ISP2-dhcp"
probe = ["{isp_probe(2)}"]
[[lan]]
name = "LAN"
interface = "lan0"
"""


class NMLab:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.bus = Bus(lab)
        self.nm = NetworkManager(lab, self.bus, never_default=(2,), ipv6=(1,))
        self.nm.wait_activated(1)
        self.config = lab.write(CONFIG)


@pytest.fixture(scope="module")
def nmlab() -> Iterator[NMLab]:
    with Lab(isps=2, dhcp=True) as lab:
        yield NMLab(lab)


@pytest.fixture
def daemon(nmlab: NMLab) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(nmlab.lab, nmlab.config)
    proc.wait_for("running:")
    yield proc
    if proc.proc.poll() is None:
        proc.stop()
    nmlab.lab.nmbalance("flush", "-c", nmlab.config)


def status(lab: Lab) -> dict[str, dict[str, object]]:
    out = json.loads(lab.nmbalance("status", "--json").stdout)
    assert out["source"] == "daemon"
    return {u["name"]: u for u in out["uplinks"]}


def bounce(lab: Lab, n: int) -> None:
    """Pull the cable long enough for NetworkManager to deactivate, then plug it back:
    down and up events for the dispatcher."""
    lab.carrier(n, False)
    assert wait_for(lambda: f"10.10{n}." not in lab.ip(lab.rtr, "-4", "addr", "show", f"wan{n}").stdout,
                    15)
    lab.carrier(n, True)


def table(lab: Lab, number: int) -> str:
    return lab.ip(lab.rtr, "route", "show", "table", str(number)).stdout


def test_gateways_come_from_networkmanager(nmlab: NMLab, daemon: DaemonProcess) -> None:
    lab = nmlab.lab
    assert "following networkmanager" in daemon.text()
    uplinks = status(lab)
    assert uplinks["ISP1"]["gateway"] == "10.101.0.1"
    assert uplinks["ISP1"]["gateway_source"] == "networkmanager"
    # No default route in any table for wan2: the lease alone knows its router.
    assert "default" not in lab.ip(lab.rtr, "route", "show", "dev", "wan2").stdout
    assert uplinks["ISP2"]["gateway"] == "10.102.0.1"
    assert uplinks["ISP2"]["gateway_source"] == "dhcp"
    assert uplinks["ISP2"]["interface"] == "wan2" and uplinks["ISP2"]["connection"] == "ISP2-dhcp"
    # IPv6 from NetworkManager's IP6Config, shown beside IPv4 (left to the system's routes).
    assert (uplinks["ISP1"]["gateway6"], uplinks["ISP1"]["gateway_source6"],
            uplinks["ISP1"]["address6"]) == ("2001:db8:101::1", "networkmanager", "2001:db8:101::2")
    assert uplinks["ISP2"]["gateway6"] is None
    # ... and its IPv6 DNS server, from IP6Config's Nameservers beside IPv4's.
    doctor = json.loads(lab.nmbalance("doctor", "-c", nmlab.config, "--json").stdout)
    dns = next(c for c in doctor if c["name"] == "ISP1 dns")
    assert dns6(1) in dns["why"], dns
    assert "default via 10.102.0.1 dev wan2 proto 211" in table(lab, 7702)
    tally = lab.connections(300)
    assert tally.get(1, 0) > 0 and tally.get(2, 0) > 0 and sum(tally.values()) == 300


def test_a_new_router_at_renewal_is_followed_within_a_second(
        nmlab: NMLab, daemon: DaemonProcess) -> None:
    lab = nmlab.lab
    lab.ip(lab.isp(2), "addr", "add", "10.102.0.254/24", "dev", "rtr")
    try:
        with SignalWatch(nmlab.bus.address, "org.freedesktop.NetworkManager",
                         needle="10.102.0.254") as watch:
            set_router(lab, 2, "10.102.0.254")
            signalled = watch.wait(timeout=30)  # the next renewal (T1 is 10 s)
            assert wait_for(lambda: "via 10.102.0.254" in table(lab, 7702), 5)
            followed = time.monotonic()
        assert followed - signalled < 1.0, followed - signalled
        assert status(lab)["ISP2"]["gateway"] == "10.102.0.254"
        assert lab.connections(200).get(2, 0) > 0
    finally:
        set_router(lab, 2, "10.102.0.1")
        assert wait_for(lambda: "via 10.102.0.1 " in table(lab, 7702), 30)
        lab.ip(lab.isp(2), "addr", "del", "10.102.0.254/24", "dev", "rtr")


def test_carrier_loss_and_return_through_networkmanager(
        nmlab: NMLab, daemon: DaemonProcess) -> None:
    lab = nmlab.lab
    mark = daemon.mark()
    lab.carrier(1, False)
    daemon.wait_for(r"applied .*ISP1 down", after=mark)
    # NetworkManager deactivates the device (carrier-wait-timeout 1 s): its
    # lease, address and route go, and our view says why.
    assert wait_for(lambda: "10.101." not in lab.ip(lab.rtr, "-4", "addr", "show", "wan1").stdout,
                    15)
    assert wait_for(lambda: status(lab)["ISP1"]["state"] in ("down", "no-gateway"), 5)
    assert lab.connections(200) == {2: 200}
    mark = daemon.mark()
    lab.carrier(1, True)
    # Back only when NetworkManager has a new lease and the probes answer again.
    daemon.wait_for(r"applied .*ISP1 active", after=mark, timeout=30)
    assert status(lab)["ISP1"]["gateway_source"] == "networkmanager"
    assert lab.connections(300).get(1, 0) > 0


def test_networkmanager_restart_is_followed_and_changes_are_still_seen(
        nmlab: NMLab, daemon: DaemonProcess) -> None:
    lab = nmlab.lab
    mark = daemon.mark()
    nmlab.nm.restart()
    daemon.wait_for(r"networkmanager left the bus", after=mark)
    daemon.wait_for(r"networkmanager joined the bus", after=mark, timeout=20)
    nmlab.nm.wait_activated(1)
    # The restart never took an uplink out of rotation.
    assert daemon.count(r"applied .*ISP. (down|no-gateway|absent)", after=mark) == 0, daemon.text()
    lab.ip(lab.isp(2), "addr", "add", "10.102.0.253/24", "dev", "rtr")
    try:
        set_router(lab, 2, "10.102.0.253")
        assert wait_for(lambda: "via 10.102.0.253" in table(lab, 7702), 30), daemon.text()
    finally:
        set_router(lab, 2, "10.102.0.1")
        assert wait_for(lambda: "via 10.102.0.1 " in table(lab, 7702), 30)
        lab.ip(lab.isp(2), "addr", "del", "10.102.0.253/24", "dev", "rtr")


def test_dispatcher_script_applies_without_a_daemon_and_pokes_a_running_one(
        nmlab: NMLab) -> None:
    lab, nm = nmlab.lab, nmlab.nm
    nmbalance_wrapper(lab, nmlab.bus, nmlab.config, nm.dir / "bin")
    script = nm.dir / "dispatcher.d" / "90-nmbalance"
    shutil.copy("dispatcher/90-nmbalance", script)
    script.chmod(0o755)
    try:
        time.sleep(2)  # events already on their way (the activation of ISP2) run it too
        lab.nmbalance("flush", "-c", nmlab.config)
        assert "nmbalance" not in lab.sh(lab.rtr, "nft", "list", "tables").stdout
        # No daemon: an event makes the script run `nmbalance apply`.
        bounce(lab, 1)
        assert wait_for(lambda: "table inet nmbalance" in lab.sh(
            lab.rtr, "nft", "list", "tables").stdout, 30), (nm.dir / "dispatcher.log").read_text()
        assert wait_for(lambda: "via 10.101.0.1" in table(lab, 7701), 30)
        # A daemon runs: the next event only asks it to refresh.
        daemon = DaemonProcess(lab, nmlab.config)
        try:
            daemon.wait_for("running:")
            mark = daemon.mark()
            bounce(lab, 1)
            daemon.wait_for(r"refresh requested: nm-(up|down) wan1", after=mark, timeout=30)
        finally:
            daemon.stop()
    finally:
        script.unlink()
        lab.nmbalance("flush", "-c", nmlab.config)


def test_a_bus_restart_keeps_what_networkmanager_said(nmlab: NMLab, daemon: DaemonProcess) -> None:
    """ISP2's gateway is known only from NetworkManager's lease: losing the bus
    must not make it no-gateway nor flush its flows."""
    lab = nmlab.lab
    mark = daemon.mark()
    nmlab.bus.proc.send_signal(signal.SIGTERM)
    nmlab.bus.proc.wait(5)
    daemon.wait_for("lost the system bus", after=mark)
    nmlab.nm.stop()  # (it would leave with its bus anyway)
    tally = lab.connections(200)
    assert tally.get(1, 0) > 0 and tally.get(2, 0) > 0 and sum(tally.values()) == 200, tally
    nmlab.bus = Bus(lab)
    daemon.wait_for("connected to the system bus again", after=mark)
    nmlab.nm = NetworkManager(lab, nmlab.bus, never_default=(2,), ipv6=(1,))
    nmlab.nm.wait_activated(1)
    daemon.wait_for("networkmanager joined the bus", after=mark, timeout=20)
    assert "default via 10.102.0.1 dev wan2 proto 211" in table(lab, 7702)
    assert daemon.count(r"ISP2 (down|no-gateway)|conntrack entries of", after=mark) == 0, \
        daemon.text()
    assert wait_for(lambda: status(lab)["ISP2"]["gateway_source"] == "dhcp", 10)


def test_the_dispatcher_never_applies_over_a_live_daemon(nmlab: NMLab,
                                                         daemon: DaemonProcess) -> None:
    """A daemon too busy (here: stopped) to answer on the bus still owns the kernel."""
    lab = nmlab.lab
    daemon.send(signal.SIGSTOP)
    try:
        lab.sh(lab.rtr, "nft", "delete", "table", "inet", "nmbalance")
        started = time.monotonic()
        result = lab.nmbalance("dispatch", "-c", nmlab.config, "up", "wan1")
        assert result.returncode == 0 and time.monotonic() - started < 15
        assert "nmbalance" not in lab.sh(lab.rtr, "nft", "list", "tables").stdout
        assert lab.nmbalance("apply", "-c", nmlab.config).returncode == 1
    finally:
        daemon.send(signal.SIGCONT)
    mark = daemon.mark()
    daemon.wait_for("drift repaired", after=0)
    assert wait_for(lambda: "nmbalance" in lab.sh(lab.rtr, "nft", "list", "tables").stdout, 5)
    assert daemon.count("Traceback", after=mark) == 0
