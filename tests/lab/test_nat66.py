"""ipv6 = "nat66" on a dual-stack lab whose ISPs filter by source prefix (BCP38):
LAN IPv6 balanced by weight and failed over apart from IPv4, with real traffic."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import SERVER_ADDR6, Lab, isp_net6, isp_probe, isp_probe6, wait_for
from labkit.managers import Bus
from tests.lab.conftest import FAST
from tests.lab.test_balancing import CHI2_1PCT, chi_square
from tests.lab.test_daemon import wait_for_file, write_hook


@pytest.fixture(scope="module")
def lab6() -> Iterator[Lab]:
    """Three ISPs: 1 and 2 dual-stack, 3 IPv4 only."""
    with Lab(isps=3) as built:
        built.dual_stack((1, 2))
        Bus(built)  # status asks the daemon over the lab's own bus
        yield built


@pytest.fixture
def daemon6(lab6: Lab) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    lab6.nmbalance("flush", "-c", lab6.write(lab6.config(ipv6=True), "flush.toml"))
    for n in (1, 2, 3):
        lab6.carrier(n, True)
        lab6.ipv6_dead(n, False)
        lab6.ipv4_dead(n, False)
        lab6.block_probes(n, False)
    lab6.sh(lab6.rtr, "conntrack", "-F", check=False)


def v6(lab: Lab, count: int) -> dict[int, int]:
    """How many of `count` IPv6 connections from the LAN each ISP carried."""
    tally: dict[int, int] = {}
    for source, n in lab.sources(count, server=SERVER_ADDR6).items():
        tally[lab.isp_of(source)] = tally.get(lab.isp_of(source), 0) + n
    return tally


def start(lab: Lab, started: list[DaemonProcess], ipv6: bool | str = True,
          **kw: object) -> DaemonProcess:
    hooks = lab.workdir / "hooks"
    write_hook(hooks / "down", "10-env", f"env > {lab.workdir}/down$FAMILY-$UPLINK.env\n")
    path = lab.write(lab.config(health=FAST, ipv6=ipv6, **kw)  # type: ignore[arg-type]
                     + f'[daemon]\nhooks_dir = "{hooks}"\n')
    daemon = DaemonProcess(lab, path)
    started.append(daemon)
    daemon.wait_for("running:")
    return daemon


def status(lab: Lab) -> dict[str, dict[str, object]]:
    out = lab.nmbalance("status", "--json")
    assert out.returncode == 0, out.stderr
    return {u["name"]: u for u in json.loads(out.stdout)["uplinks"]}


def test_off_leaves_ipv6_to_the_system_and_nat66_balances_it_by_weight(lab6: Lab) -> None:
    # ipv6 = "off": the ULA LAN has no way out (no NAT, and the ISPs drop its sources).
    apply = lab6.nmbalance("apply", "-c", lab6.write(lab6.config()))
    assert apply.returncode == 0, apply.stderr
    assert v6(lab6, 20) == {0: 20}
    # Those attempts left unmasqueraded entries that a reused source port would match.
    lab6.sh(lab6.rtr, "conntrack", "-F", "-f", "ipv6", check=False)
    apply = lab6.nmbalance("apply", "-c", lab6.write(lab6.config(ipv6=True, weights=(1, 3, 2))))
    assert apply.returncode == 0, apply.stderr
    tally = v6(lab6, 2000)
    # ISP3 has no IPv6: ISP1 and ISP2 share IPv6 1:3; IPv4 keeps all three at 1:3:2.
    assert set(tally) == {1, 2}, tally
    assert chi_square(tally, {1: 1, 2: 3}) < CHI2_1PCT[1], tally
    v4 = lab6.connections(1200)
    assert set(v4) == {1, 2, 3} and chi_square(v4, {1: 1, 2: 3, 3: 2}) < CHI2_1PCT[2], v4
    routes = lab6.ip(lab6.rtr, "-6", "route", "show", "table", "all", "proto", "211").stdout
    assert "default via fe80::1 dev wan1" in routes and "default via fe80::1 dev wan2" in routes
    assert "wan3" not in routes
    # The router's own IPv6, bound to an uplink's address, leaves by that uplink.
    assert lab6.sources(10, ns=lab6.rtr, bind="2001:db8:102::2", server=SERVER_ADDR6) == {
        "2001:db8:102::2": 10}
    shown = lab6.nmbalance("apply", "-c", lab6.write(lab6.config(ipv6=True)), "--dry-run")
    assert "ISP3 IPv6: no-gateway - no global IPv6 address" in shown.stdout, shown.stdout


def test_dead_ipv6_on_one_uplink_keeps_its_ipv4_and_the_reverse(
        lab6: Lab, daemon6: list[DaemonProcess]) -> None:
    daemon = start(lab6, daemon6)
    assert set(v6(lab6, 200)) == {1, 2}
    lab6.ipv6_dead(2, True)
    daemon.wait_for("ISP2 IPv6 down", timeout=10)
    assert wait_for(lambda: status(lab6)["ISP2"]["state6"] == "down", 5)
    assert status(lab6)["ISP2"]["state"] == "active"
    assert v6(lab6, 200) == {1: 200}
    env = wait_for_file(lab6.workdir / "down6-ISP2.env").read_text()
    assert "EVENT=down" in env and "FAMILY=6" in env, env
    explained = lab6.nmbalance("explain", "-c", str(lab6.workdir / "nmbalance.toml"),
                               "--dst", SERVER_ADDR6).stdout
    # The daemon's IPv6 states: ISP2's IPv6 is down while its IPv4 is active.
    assert "=> ISP1" in explained and "not ISP2: down: 3 probes lost" in explained, explained
    assert set(lab6.connections(300)) == {1, 2, 3}  # ISP2's IPv4 still takes its share
    lab6.ipv6_dead(2, False)
    assert wait_for(lambda: status(lab6)["ISP2"]["state6"] == "active", 15)
    assert set(v6(lab6, 200)) == {1, 2}
    # The reverse: ISP1's IPv4 dies, its IPv6 stays in rotation.
    lab6.ipv4_dead(1, True)
    daemon.wait_for("ISP1 down", timeout=10)
    assert 1 not in lab6.connections(300)
    assert set(v6(lab6, 200)) == {1, 2}
    assert status(lab6)["ISP1"]["state6"] == "active"


def test_carrier_loss_takes_both_families_out_and_back_and_a_stream_survives(
        lab6: Lab, daemon6: list[DaemonProcess]) -> None:
    daemon = start(lab6, daemon6, weights=(1, 1, 1))
    stream, port = lab6.start_stream(8, server=SERVER_ADDR6)
    assert wait_for(lambda: lab6.isp_of(_masqueraded(lab6, port)) in (1, 2), 3)
    kept = lab6.isp_of(_masqueraded(lab6, port))
    failed = 3 - kept
    lab6.carrier(3, False)  # an IPv4-only uplink's failure moves no IPv6 flow either
    lab6.carrier(failed, False)
    daemon.wait_for(f"ISP{failed} IPv6 down", timeout=10)
    assert v6(lab6, 100) == {kept: 100}
    assert failed not in lab6.connections(100)
    lab6.carrier(failed, True)
    lab6.carrier(3, True)
    assert wait_for(lambda: status(lab6)[f"ISP{failed}"]["state6"] == "active", 20), (
        status(lab6), daemon.text()[-2000:])
    assert set(v6(lab6, 100)) == {1, 2}
    stream.wait(20)
    assert stream.stdout is not None
    result = json.loads(stream.stdout.readline())
    # The stream through the uplink that stayed never noticed the other's failure.
    assert result["received"] == result["sent"] and result["largest_gap_ms"] < 1000, result


def _masqueraded(lab: Lab, port: int) -> str:
    """The address the LAN's IPv6 flow from `port` was masqueraded to: the
    destination of its reply direction in conntrack."""
    out = lab.sh(lab.rtr, "conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--sport",
                 str(port), check=False).stdout
    dsts = [f.split("=", 1)[1] for f in out.split() if f.startswith("dst=")]
    return dsts[-1] if len(dsts) > 1 else ""


def test_ipv4_only_and_ipv6_only_uplinks_mix_in_one_config(lab6: Lab) -> None:
    # ISP2 loses its IPv4 (an IPv6-only uplink); ISP3 never had IPv6.
    lab6.ip(lab6.rtr, "addr", "del", "10.102.0.2/24", "dev", "wan2")
    try:
        path = lab6.write(lab6.config(ipv6=True, weights=(1, 1, 1)))
        shown = lab6.nmbalance("apply", "-c", path, "--dry-run").stdout
        assert "ISP2: no-gateway" in shown and "ISP2 IPv6: active" in shown, shown
        assert "ISP3: active" in shown and "ISP3 IPv6: no-gateway" in shown, shown
        assert lab6.nmbalance("apply", "-c", path).returncode == 0
        assert set(lab6.connections(300)) == {1, 3}
        assert set(v6(lab6, 300)) == {1, 2}
    finally:
        lab6.ip(lab6.rtr, "addr", "add", "10.102.0.2/24", "dev", "wan2", check=False)
        lab6.ip(lab6.rtr, "route", "add", "default", "via", "10.102.0.1", "dev", "wan2",
                "metric", "102", check=False)


UPLOAD = """
import socket, sys
s = socket.create_connection((sys.argv[1], 8000), timeout=10)
s.sendall(b"E")
data = bytes(300_000)
s.sendall(data)
got = 0
while got < len(data):
    chunk = s.recv(65536)
    if not chunk:
        break
    got += len(chunk)
print(got)
"""


def test_packet_too_big_reaches_the_lan_host_through_nat66(lab6: Lab) -> None:
    """Past each ISP the path takes 1280 bytes only: the ISP's ICMPv6 Packet Too Big,
    sent to the masqueraded address, must be translated back to the LAN host, or
    full-size segments vanish and the upload stalls."""
    apply = lab6.nmbalance("apply", "-c", lab6.write(lab6.config(ipv6=True, weights=(1, 1, 1))))
    assert apply.returncode == 0, apply.stderr
    links = [(lab6.isp(n), "inet") for n in (1, 2)] + [(lab6.inet, f"isp{n}") for n in (1, 2)]
    for ns, dev in links:
        lab6.ip(ns, "link", "set", dev, "mtu", "1280")
    # The server still offers a full-size MSS, as a server behind a wider link would.
    for n in (1, 2):
        lab6.ip(lab6.inet, "-6", "route", "replace", f"{isp_net6(n)}/64", "via",
                f"2001:db8:2{n:02d}::1", "advmss", "1440")
    try:
        for _ in range(2):  # a new connection each time: either uplink
            up = lab6.sh(lab6.lan, sys.executable, "-c", UPLOAD, SERVER_ADDR6, check=False)
            assert up.stdout.strip() == "300000", (up.stdout, up.stderr)
        cached = lab6.ip(lab6.lan, "-6", "route", "get", SERVER_ADDR6).stdout
        assert "mtu 1280" in cached, cached
    finally:
        for ns, dev in links:
            lab6.ip(ns, "link", "set", dev, "mtu", "1500")
        for n in (1, 2):
            lab6.ip(lab6.inet, "-6", "route", "replace", f"{isp_net6(n)}/64", "via",
                    f"2001:db8:2{n:02d}::1")
        lab6.ip(lab6.lan, "-6", "route", "flush", "cache", check=False)


def test_persistence_keeps_each_ipv6_source_on_one_uplink(
        lab6: Lab, daemon6: list[DaemonProcess]) -> None:
    hosts = [f"fd00:250::{10 + i}" for i in range(8)]
    for host in hosts:
        lab6.ip(lab6.lan, "-6", "addr", "replace", f"{host}/64", "dev", "eth0")
    try:
        daemon = start(lab6, daemon6, mode="persistence", weights=(1, 1, 1))
        first: dict[str, int] = {}
        for host in hosts:
            seen = {lab6.isp_of(s): n for s, n in
                    lab6.sources(15, bind=host, server=SERVER_ADDR6).items()}
            assert len(seen) == 1 and 0 not in seen, (host, seen)
            first[host] = next(iter(seen))
        assert set(first.values()) == {1, 2}, first  # chance: 2 x 0.5^8 of failing
        # ISP2's IPv6 dies: its sources move to ISP1, ISP1's stay put.
        lab6.ipv6_dead(2, True)
        daemon.wait_for("ISP2 IPv6 down", timeout=10)
        assert wait_for(lambda: status(lab6)["ISP2"]["state6"] == "down", 5)
        for host in hosts:
            seen = {lab6.isp_of(s): n for s, n in
                    lab6.sources(5, bind=host, server=SERVER_ADDR6).items()}
            assert seen == {1: 5}, (host, first[host], seen)
        # ... and IPv4 persistence never noticed: ISP2 still holds its IPv4 sources.
        assert status(lab6)["ISP2"]["state"] == "active"
    finally:
        for host in hosts:
            lab6.ip(lab6.lan, "-6", "addr", "del", f"{host}/64", "dev", "eth0", check=False)


SERVER_B6 = "2001:db8:ff::11"


def _learned6(lab: Lab, uplink: str) -> str:
    return lab.sh(lab.rtr, "nft", "list", "set", "inet", "nmbalance",
                  f"st6_default__{uplink}", check=False).stdout


def test_fastest_response_learns_each_ipv6_destinations_fastest_uplink(
        lab6: Lab, daemon6: list[DaemonProcess]) -> None:
    if SERVER_B6 not in lab6.ip(lab6.inet, "-6", "addr", "show", "lo").stdout:
        lab6.ip(lab6.inet, "-6", "addr", "add", f"{SERVER_B6}/128", "dev", "lo")
        lab6.start_server(SERVER_B6)
    # SERVER_ADDR6 answers fastest through ISP1, SERVER_B6 through ISP2 (ISP3: IPv4 only).
    lab6.delay(1, 30, SERVER_B6)
    lab6.delay(2, 30, SERVER_ADDR6)
    try:
        daemon = start(lab6, daemon6, mode="fastest-response", weights=(1, 1, 1))
        # The first connection to each takes the IPv6 weights; the race learns behind it.
        assert sum(lab6.sources(1, server=SERVER_ADDR6).values()) == 1
        assert sum(lab6.sources(1, server=SERVER_B6).values()) == 1
        assert wait_for(lambda: SERVER_ADDR6 in _learned6(lab6, "ISP1")
                        and SERVER_B6 in _learned6(lab6, "ISP2"), 10), \
            (_learned6(lab6, "ISP1"), _learned6(lab6, "ISP2"), daemon.text()[-2000:])
        assert v6(lab6, 40) == {1: 40}
        assert {lab6.isp_of(s) for s in lab6.sources(40, server=SERVER_B6)} == {2}
        # ISP1's IPv6 dies: its learned IPv6 destinations go, and new connections to
        # them take the live uplink, while ISP1 keeps its IPv4.
        lab6.ipv6_dead(1, True)
        daemon.wait_for("ISP1 IPv6 down", timeout=10)
        assert wait_for(lambda: SERVER_ADDR6 not in _learned6(lab6, "ISP1"), 5)
        assert v6(lab6, 20) == {2: 20}
        assert status(lab6)["ISP1"]["state"] == "active"
    finally:
        for key in list(lab6.delayed):
            lab6.delay(key[0], 0, key[1])


def test_lowest_latency_chooses_for_each_family_by_its_own_round_trips(
        lab6: Lab, daemon6: list[DaemonProcess]) -> None:
    # ISP1 answers IPv4 fastest; ISP2 answers IPv6 fastest.
    for n in (2, 3):
        lab6.delay(n, 40, isp_probe(n))
    lab6.delay(1, 40, isp_probe6(1))
    try:
        daemon = start(lab6, daemon6, mode="lowest-latency", weights=(1, 1, 1))
        daemon.wait_for(r"mode: ISP1 is the fastest", timeout=20)
        daemon.wait_for(r"mode IPv6: ISP2 is the fastest", timeout=20)
        assert wait_for(lambda: set(lab6.connections(30)) == {1}, 10)
        assert wait_for(lambda: set(v6(lab6, 30)) == {2}, 10)
    finally:
        for key in list(lab6.delayed):
            lab6.delay(key[0], 0, key[1])


def test_a_rule_by_ipv6_prefix_steers_ipv6_and_explain_says_so(lab6: Lab) -> None:
    rule = (f'[[rule]]\nname = "srv6"\ndst = ["{SERVER_ADDR6}/128", "203.0.113.99/32"]\n'
            'proto = "tcp"\nmethod = "enforced"\nuplinks = ["ISP2"]\n')
    path = lab6.write(lab6.config(ipv6=True, weights=(1, 1, 1), extra=rule))
    apply = lab6.nmbalance("apply", "-c", path)
    assert apply.returncode == 0, apply.stderr
    assert v6(lab6, 60) == {2: 60}
    assert set(lab6.connections(300)) == {1, 2, 3}  # IPv4 to the server: no rule
    explained = lab6.nmbalance("explain", "-c", path, "--src", "fd00:250::2", "--dst",
                               SERVER_ADDR6, "--proto", "tcp", "--dport", "8000")
    assert explained.returncode == 0, explained.stderr
    assert "rule srv6 matches" in explained.stdout and "=> ISP2" in explained.stdout, \
        explained.stdout
    other = lab6.nmbalance("explain", "-c", path, "--dst", "2001:db8:ff::99", "--proto", "udp")
    assert f"rule srv6: no (dst {SERVER_ADDR6}/128 is not met)" in other.stdout, other.stdout
    assert "ISP1 50.0%" in other.stdout and "ISP2 50.0%" in other.stdout, other.stdout
