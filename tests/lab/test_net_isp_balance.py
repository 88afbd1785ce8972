"""A Net-ISP-Balance balance.conf on a real router: the same balancing, its
firewall (the LAN side starts connections; nothing new comes in from an
ISP but a port forward), IPv4 forwarding turned on and put back, and
host-name ping targets resolved through the lab's own DNS server."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.lab import DNS_ADDR, SERVER_ADDR, Lab, isp_probe, isp_router_addr, wait_for
from labkit.managers import Bus
from tests.lab.conftest import Start
from tests.lab.test_balancing import CHI2_1PCT, chi_square

LAN_HOST, LAN2_HOST = "10.250.0.2", "10.252.0.2"
ROUTER_PORT = 9000

BALANCE_CONF = """\
#service    device   role     ping-ip          weight   gateway
ISP1        wan1     isp      {p1}             1        default
ISP2        wan2     isp      {p2}             1        default
ISP3        wan3     isp      {p3}             default  default
LAN         lan0     lan
LAN2        lan2     lan
mode=balanced
forwarding_group=:lan :isp
check_arp=0
interval_ms=200
min_successive_pkts_rcvd=3
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(isps=3) as built:
        lan2 = built.add_lan(2)
        built.start_server(LAN_HOST, ns=built.lan)
        built.start_server(LAN2_HOST, ns=lan2)
        # A service on the router itself, not ssh: the firewall must keep it in.
        built.start_server(isp_router_addr(1), ns=built.rtr, port=ROUTER_PORT)
        for n in range(1, 4):  # the ISPs know the way back to the LAN
            built.ip(built.isp(n), "route", "add", "10.250.0.0/24", "via", isp_router_addr(n))
        built.start_dns({f"probe{n}.lab.test": isp_probe(n) for n in range(1, 4)})
        yield built


def reaches(lab: Lab, ns: str, address: str, port: int = 8000) -> bool:
    result = lab.sh(ns, "python3", "-c", (
        "import socket,sys\n"
        f"s=socket.create_connection(('{address}', {port}), timeout=2)\n"
        "s.sendall(b'W'); sys.exit(0 if s.recv(64) else 1)"), check=False)
    return result.returncode == 0


def forwarding(lab: Lab) -> str:
    return lab.sh(lab.rtr, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()


def test_balance_conf_balances_and_keeps_nib_firewall(lab: Lab) -> None:
    conf = lab.write(BALANCE_CONF.format(p1=isp_probe(1), p2=isp_probe(2), p3=isp_probe(3)),
                     "balance.conf")
    lan2 = f"{lab.prefix}-lan2"
    # Before: nothing filters, so each probe below means what it says.
    assert reaches(lab, lab.isp(1), LAN_HOST)
    assert reaches(lab, lab.isp(1), isp_router_addr(1), ROUTER_PORT)
    lab.sh(lab.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    try:
        result = lab.nmbalance("apply", "-c", conf)
        assert result.returncode == 0, result.stderr
        assert forwarding(lab) == "1"
        tally = lab.connections(1500)
        assert sum(tally.values()) == 1500 and 0 not in tally, tally
        assert chi_square(tally, {1: 1, 2: 1, 3: 1}) < CHI2_1PCT[2], tally
        # The LAN side starts: to the Internet, to the other LAN, to the router.
        assert reaches(lab, lab.lan, SERVER_ADDR)
        assert reaches(lab, lab.lan, LAN2_HOST) and reaches(lab, lan2, LAN_HOST)
        assert reaches(lab, lab.lan, isp_router_addr(1), ROUTER_PORT)
        # Nothing new from an ISP: not to a LAN host, not to a router port.
        assert not reaches(lab, lab.isp(1), LAN_HOST)
        assert not reaches(lab, lab.isp(2), isp_router_addr(1), ROUTER_PORT)
        assert lab.sh(lab.isp(1), sys.executable, "-c", (  # pings, at 1/s
            "import sys, icmplib\n"
            f"sys.exit(0 if icmplib.ping('{isp_router_addr(1)}', count=1, timeout=2).is_alive "
            "else 1)"), check=False).returncode == 0
        # `apply isp2`: Net-ISP-Balance's names are upper case, users type them lower.
        result = lab.nmbalance("apply", "-c", conf, "isp2")
        assert result.returncode == 0, result.stderr
        assert set(lab.connections(60)) == {2}
    finally:
        lab.nmbalance("flush", "-c", conf)
    assert forwarding(lab) == "0"
    lab.sh(lab.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def test_converted_port_forward_reaches_its_lan_host(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "balance" / "firewall"
    folder.mkdir(parents=True)
    (folder / "02.forward.pl").write_text(f"$B->forward(8080=>'{LAN_HOST}:8000');\n")
    conf = tmp_path / "balance.conf"
    conf.write_text(BALANCE_CONF.format(p1=isp_probe(1), p2=isp_probe(2), p3=isp_probe(3)))
    converted = lab.nmbalance("convert", str(conf))
    assert converted.returncode == 0, converted.stderr
    assert "became 1 [[port_forward]]" in converted.stderr
    toml = lab.write(converted.stdout)
    try:
        result = lab.nmbalance("apply", "-c", toml)
        assert result.returncode == 0, result.stderr
        for n in (1, 3):
            assert reaches(lab, lab.isp(n), isp_router_addr(n), 8080)
        assert not reaches(lab, lab.isp(1), LAN_HOST)  # only through the forward
    finally:
        lab.nmbalance("flush", "-c", toml)


def test_host_name_probes_resolve_through_each_uplink(lab: Lab, start: Start) -> None:
    Bus(lab)  # so that `status` asks the daemon
    text = BALANCE_CONF.format(p1="probe1.lab.test", p2="probe2.lab.test", p3="probe3.lab.test")
    daemon = start(text=text.replace("mode=balanced", "mode=balanced\nlong_down_time=5"))
    for n in range(1, 4):
        daemon.wait_for(rf"ISP{n}: probing probe{n}.lab.test at {isp_probe(n)} "
                        rf"\(resolved through {DNS_ADDR}\)")
    assert wait_for(lambda: lab.nmbalance("status").stdout.count(" active ") == 3, 20), \
        lab.nmbalance("status").stdout
    status = lab.nmbalance("status").stdout
    assert f"probing probe2.lab.test = {isp_probe(2)}" in status
    # Each name was asked from its own uplink's address, so through that ISP.
    asked = set(lab.dns_queries())
    for n in range(1, 4):
        assert f"probe{n}.lab.test from {isp_router_addr(n)}" in asked, asked
    # A probe target that stops answering is asked for again, not probed blindly.
    before = len(lab.dns_queries())
    lab.block_probes(2, True)
    try:
        assert wait_for(lambda: len(lab.dns_queries()) > before, 20)
    finally:
        lab.block_probes(2, False)
    time.sleep(0.1)
