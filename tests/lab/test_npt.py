"""ipv6 = "npt" on the dual-stack lab: each ISP routes a delegated /56 to the router
and forwards only sources in it or in the link's /64 (BCP38). The ULA LAN's prefix
leaves translated one to one into the chosen ISP's prefix, with real traffic."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import LAN6_NET, SERVER_ADDR6, Lab, wait_for
from labkit.managers import Bus
from tests.lab.test_balancing import CHI2_1PCT, chi_square
from tests.lab.test_nat66 import UPLOAD, start, status, v6

LAN_HOST = f"{LAN6_NET}2"
TRANSLATED = {1: "2001:db8:101:100::2", 2: "2001:db8:102:100::2"}  # LAN_HOST via ISP n
# Connect, and say how it failed: an ICMPv6 unreachable fails it at once, a packet
# looping until its hop limit runs out only times it out.
CONNECT = """
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=3)
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno or 0, str(exc)))
"""
PORT_IN = 8100  # a server on the LAN host, reached from outside at its translated address


@pytest.fixture(scope="module")
def lab6() -> Iterator[Lab]:
    """Three ISPs: 1 and 2 dual-stack with a delegated prefix each, 3 IPv4 only."""
    with Lab(isps=3) as built:
        built.dual_stack((1, 2))
        Bus(built)
        built.start_server(LAN_HOST, ns=built.lan, port=PORT_IN)
        yield built


@pytest.fixture
def daemon6(lab6: Lab) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    lab6.nmbalance("flush", "-c", lab6.write(lab6.config(ipv6="npt"), "flush.toml"))
    for n in (1, 2, 3):
        lab6.carrier(n, True)
        lab6.ipv6_dead(n, False)
    lab6.sh(lab6.rtr, "conntrack", "-F", check=False)


def test_npt_keeps_the_host_part_balances_by_weight_and_lets_connections_in(lab6: Lab) -> None:
    path = lab6.write(lab6.config(ipv6="npt", weights=(1, 3, 2)))
    apply = lab6.nmbalance("apply", "-c", path)
    assert apply.returncode == 0, apply.stderr
    seen = lab6.sources(2000, server=SERVER_ADDR6)
    # One address per ISP, the LAN host's own host part in that ISP's prefix: no ports
    # rewritten, no sharing of one address among the LAN's hosts.
    assert set(seen) == set(TRANSLATED.values()), seen
    tally = {n: seen[a] for n, a in TRANSLATED.items()}
    assert chi_square(tally, {1: 1, 2: 3}) < CHI2_1PCT[1], tally
    # From outside, each translated address reaches the LAN host, which answers
    # through the ISP the connection came in by.
    for n, address in TRANSLATED.items():
        came = lab6.sources(20, ns=lab6.inet, server=address, port=PORT_IN)
        assert came == {f"2001:db8:2{n:02d}::2": 20}, (n, came)
    # A part of the delegated prefix no LAN stands for is refused at the router, not
    # bounced between it and the ISP until the hop limit runs out.
    tried = lab6.sh(lab6.inet, sys.executable, "-c", CONNECT, "2001:db8:101:1ff::1",
                    check=False)
    assert tried.stdout.strip() in ("ENETUNREACH", "EHOSTUNREACH"), (tried.stdout, tried.stderr)
    checked = lab6.nmbalance("check", "-q", "-c", path).stdout
    assert "ISP1: IPv6 npt into 2001:db8:101:100::/56" in checked, checked
    assert "ISP3: IPv6 masqueraded (no prefix6)" in checked, checked
    shown = lab6.nmbalance("apply", "-c", path, "--dry-run").stdout
    assert "ISP1 IPv6: active" in shown and "npt into 2001:db8:101:100::/56" in shown, shown


def test_npt_fails_over_a_dead_isps_ipv6_and_a_stream_through_the_other_survives(
        lab6: Lab, daemon6: list[DaemonProcess]) -> None:
    daemon = start(lab6, daemon6, ipv6="npt", weights=(1, 1, 1))
    assert set(v6(lab6, 200)) == {1, 2}
    stream, port = lab6.start_stream(6, server=SERVER_ADDR6)
    assert wait_for(lambda: _translated(lab6, port) in TRANSLATED.values(), 3)
    kept = lab6.isp_of(_translated(lab6, port))
    failed = 3 - kept
    lab6.ipv6_dead(failed, True)
    daemon.wait_for(f"ISP{failed} IPv6 down", timeout=10)
    assert wait_for(lambda: status(lab6)[f"ISP{failed}"]["state6"] == "down", 5)
    assert v6(lab6, 200) == {kept: 200}
    assert status(lab6)[f"ISP{failed}"]["state"] == "active"  # its IPv4 lives on
    stream.wait(20)
    assert stream.stdout is not None
    result = json.loads(stream.stdout.readline())
    assert result["received"] == result["sent"] and result["largest_gap_ms"] < 1000, result
    lab6.ipv6_dead(failed, False)
    assert wait_for(lambda: status(lab6)[f"ISP{failed}"]["state6"] == "active", 15)
    assert set(v6(lab6, 200)) == {1, 2}


def _translated(lab: Lab, port: int) -> str:
    """The address the LAN's IPv6 flow from `port` left as (its reply's destination)."""
    out = lab.sh(lab.rtr, "conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--sport",
                 str(port), check=False).stdout
    dsts = [f.split("=", 1)[1] for f in out.split() if f.startswith("dst=")]
    return dsts[-1] if len(dsts) > 1 else ""


def test_packet_too_big_reaches_the_lan_host_through_npt(lab6: Lab) -> None:
    """The ISP's ICMPv6 Packet Too Big goes to the translated address: conntrack must
    translate the error and the packet it quotes back to the LAN host's."""
    apply = lab6.nmbalance("apply", "-c", lab6.write(lab6.config(ipv6="npt", weights=(1, 1, 1))))
    assert apply.returncode == 0, apply.stderr
    links = [(lab6.isp(n), "inet") for n in (1, 2)] + [(lab6.inet, f"isp{n}") for n in (1, 2)]
    for ns, dev in links:
        lab6.ip(ns, "link", "set", dev, "mtu", "1280")
    for n in (1, 2):
        lab6.ip(lab6.inet, "-6", "route", "replace", f"2001:db8:1{n:02d}:100::/56", "via",
                f"2001:db8:2{n:02d}::1", "advmss", "1440")
    try:
        for _ in range(3):
            up = lab6.sh(lab6.lan, sys.executable, "-c", UPLOAD, SERVER_ADDR6, check=False)
            assert up.stdout.strip() == "300000", (up.stdout, up.stderr)
        cached = lab6.ip(lab6.lan, "-6", "route", "get", SERVER_ADDR6).stdout
        assert "mtu 1280" in cached, cached
    finally:
        for ns, dev in links:
            lab6.ip(ns, "link", "set", dev, "mtu", "1500")
        for n in (1, 2):
            lab6.ip(lab6.inet, "-6", "route", "replace", f"2001:db8:1{n:02d}:100::/56", "via",
                    f"2001:db8:2{n:02d}::1")
        lab6.ip(lab6.lan, "-6", "route", "flush", "cache", check=False)
