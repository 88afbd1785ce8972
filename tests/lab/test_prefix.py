"""ipv6 = "prefix" on the dual-stack lab: each ISP routes a delegated /56 to the
router and forwards only sources in it (BCP38); nmbalance advertises a /64 of
each on the LAN through a real radvd, the LAN host autoconfigures an address in
each, and a dead ISP's prefix is deprecated so new connections take the other."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import SERVER_ADDR6, Lab, wait_for
from labkit.managers import Bus
from tests.lab.test_nat66 import UPLOAD, start, status, v6

BLOCK = {1: "2001:db8:101:100::/64", 2: "2001:db8:102:100::/64"}  # ISP n's on the LAN


@pytest.fixture(scope="module")
def lab6() -> Iterator[Lab]:
    """Three ISPs: 1 and 2 dual-stack with a delegated prefix each, 3 IPv4 only."""
    with Lab(isps=3) as built:
        built.dual_stack((1, 2))
        Bus(built)
        # radvd reads the file nmbalance writes: one apply before it starts.
        path = built.write(built.config(ipv6="prefix", weights=(3, 1, 1)), "first.toml")
        assert built.nmbalance("apply", "-c", path).returncode == 0
        built.start_radvd()
        yield built


@pytest.fixture
def daemon6(lab6: Lab) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    lab6.nmbalance("flush", "-c", lab6.write(lab6.config(ipv6="prefix"), "flush.toml"))
    for n in (1, 2, 3):
        lab6.carrier(n, True)
        lab6.ipv6_dead(n, False)
    lab6.sh(lab6.rtr, "conntrack", "-F", check=False)


def deprecated(lab: Lab, n: int) -> bool:
    return lab.slaac().get(BLOCK[n], ("", False))[1]


def test_prefix_deprecates_a_dead_isps_prefix_and_rescues_its_sources(
        lab6: Lab, daemon6: list[DaemonProcess]) -> None:
    daemon = start(lab6, daemon6, ipv6="prefix", weights=(3, 1, 1))
    # The host holds an address of each prefix; ISP1's (on top by weight) preferred.
    assert wait_for(lambda: set(lab6.slaac()) == set(BLOCK.values()), 15), lab6.slaac()
    assert wait_for(lambda: deprecated(lab6, 2) and not deprecated(lab6, 1), 10), lab6.slaac()
    addr = {n: lab6.slaac()[BLOCK[n]][0] for n in BLOCK}
    # The host chooses its source, and so its ISP: the preferred prefix for new
    # connections, and a socket bound to the other address leaves by that one's ISP.
    assert lab6.sources(100, server=SERVER_ADDR6) == {addr[1]: 100}
    assert lab6.sources(20, bind=addr[2], server=SERVER_ADDR6) == {addr[2]: 20}
    assert status(lab6)["ISP2"]["state6"] == "standby"
    # ISP1's IPv6 dies: its prefix is deprecated on the LAN, ISP2's preferred.
    died = time.monotonic()
    lab6.ipv6_dead(1, True)
    assert wait_for(lambda: deprecated(lab6, 1) and not deprecated(lab6, 2), 20), (
        lab6.slaac(), daemon.text()[-2000:])
    took = time.monotonic() - died
    print(f"ISP1's prefix deprecated on the LAN host {took:.1f} s after its IPv6 died")
    daemon.wait_for("ISP1 IPv6 down")
    assert v6(lab6, 100) == {2: 100}
    assert lab6.sources(50, server=SERVER_ADDR6) == {addr[2]: 50}
    # A socket that still uses the dead prefix (bound to it, or chosen before the
    # advertisement came) is rescued: out by ISP2, its prefix translated to ISP2's.
    rescued = addr[1].replace("2001:db8:101:", "2001:db8:102:")
    assert lab6.sources(20, bind=addr[1], server=SERVER_ADDR6) == {rescued: 20}
    assert status(lab6)["ISP1"]["state"] == "active"  # its IPv4 lives on
    # Repaired: ISP1 is on top again, by priority.
    lab6.ipv6_dead(1, False)
    assert wait_for(lambda: deprecated(lab6, 2) and not deprecated(lab6, 1), 20), lab6.slaac()
    assert lab6.sources(50, server=SERVER_ADDR6) == {addr[1]: 50}
    assert "radvd" in (lab6.workdir / "radvd.log").read_text()
    assert "reloaded (radvd pid" in daemon.text()
    path = str(lab6.workdir / "nmbalance.toml")
    checked = lab6.nmbalance("check", "-q", "-c", path).stdout
    assert "ISP1: IPv6 prefix 2001:db8:101:100::/56, a /64 of it per LAN" in checked, checked
    assert "ISP3: IPv6 not for the LANs (no prefix6)" in checked, checked
    shown = lab6.nmbalance("apply", "-c", path, "--dry-run").stdout
    assert "prefix 2001:db8:102:100::/56 deprecated on the LANs" in shown, shown
    assert "# radvd config" in shown and "AdvPreferredLifetime 0;" in shown, shown


def test_packet_too_big_reaches_the_lan_host_by_its_own_prefix(lab6: Lab) -> None:
    """Routed, not translated: the ISP's ICMPv6 Packet Too Big goes straight to the
    LAN host's address in the ISP's prefix."""
    apply = lab6.nmbalance("apply", "-c", lab6.write(lab6.config(ipv6="prefix", weights=(3, 1, 1))))
    assert apply.returncode == 0, apply.stderr
    assert wait_for(lambda: set(lab6.slaac()) == set(BLOCK.values()), 15), lab6.slaac()
    links = [(lab6.isp(n), "inet") for n in (1, 2)] + [(lab6.inet, f"isp{n}") for n in (1, 2)]
    for ns, dev in links:
        lab6.ip(ns, "link", "set", dev, "mtu", "1280")
    for n in (1, 2):
        lab6.ip(lab6.inet, "-6", "route", "replace", f"2001:db8:1{n:02d}:100::/56", "via",
                f"2001:db8:2{n:02d}::1", "advmss", "1440")
    try:
        up = lab6.sh(lab6.lan, sys.executable, "-c", UPLOAD, SERVER_ADDR6, check=False)
        assert up.stdout.strip() == "300000", (up.stdout, up.stderr)
        cached = lab6.ip(lab6.lan, "-6", "route", "get", SERVER_ADDR6).stdout
        assert "mtu 1280" in cached and "2001:db8:101:100:" in cached, cached
    finally:
        for ns, dev in links:
            lab6.ip(ns, "link", "set", dev, "mtu", "1500")
        for n in (1, 2):
            lab6.ip(lab6.inet, "-6", "route", "replace", f"2001:db8:1{n:02d}:100::/56", "via",
                    f"2001:db8:2{n:02d}::1")
        lab6.ip(lab6.lan, "-6", "route", "flush", "cache", check=False)
        lab6.nmbalance("flush", "-c", str(lab6.workdir / "nmbalance.toml"))
