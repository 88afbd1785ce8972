"""The measured methods with real traffic: overflow moves new connections off a
saturated uplink and back; least-used spreads by free capacity."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from labkit.lab import SERVER_ADDR, Lab, wait_for
from labkit.managers import Bus
from tests.lab.conftest import FAST, Start

RATE_MBIT = 20


def _capped(lab: Lab, on: bool) -> None:
    """ISP1 delivers at most RATE_MBIT toward the router (the download direction)."""
    if on:
        lab.sh(lab.isp(1), "tc", "qdisc", "replace", "dev", "rtr", "root", "tbf", "rate",
               f"{RATE_MBIT}mbit", "burst", "32kbit", "latency", "50ms")
    else:
        lab.sh(lab.isp(1), "tc", "qdisc", "del", "dev", "rtr", "root", check=False)


def _download(lab: Lab, seconds: int) -> subprocess.Popen[str]:
    return lab.spawn(lab.lan, "iperf3", "-c", SERVER_ADDR, "-R", "-t", str(seconds), "-P", "2")


def test_overflow_spills_to_the_next_uplink_and_comes_back(lab: Lab, start: Start) -> None:
    Bus(lab)  # so that `status` asks the daemon
    server = lab.spawn(lab.inet, "iperf3", "-s", "-B", SERVER_ADDR)
    _capped(lab, True)
    try:
        text = lab.config("overflow", weights=(3, 2, 1), health=FAST)
        for n, mbps in ((1, RATE_MBIT), (2, 1000), (3, 1000)):
            text = text.replace(f'interface = "wan{n}"\n',
                                f'interface = "wan{n}"\ncapacity_mbps = {mbps}\n')
        daemon = start(text=text)
        daemon.wait_for(r"ISP1 takes new connections", timeout=20)
        assert wait_for(lambda: set(lab.connections(30)) == {1}, 15)
        mark = daemon.mark()
        bulk = _download(lab, 12)
        try:
            daemon.wait_for(r"mode: ISP2 takes new connections \(ISP1 \d+% full", after=mark,
                            timeout=15)
            assert wait_for(lambda: set(lab.connections(30)) == {2}, 5)
            status = lab.nmbalance("status").stdout
            assert "choice of mode: ISP2 takes new connections (ISP1" in status, status
            assert re.search(r"^ISP1 .* \d+\.\d down \d+\.\d up$", status, re.M), status
        finally:
            bulk.terminate()
            bulk.wait()
        daemon.wait_for(r"mode: ISP1 takes new connections", after=mark + 1, timeout=15)
        assert wait_for(lambda: set(lab.connections(30)) == {1}, 5)
    finally:
        _capped(lab, False)
        server.terminate()
        server.wait()


def test_check_refuses_overflow_without_capacities(lab: Lab) -> None:
    result = lab.nmbalance("check", "-c", lab.write(lab.config("least-used")))
    assert result.returncode == 2
    assert "uplink 'ISP1' needs download_mbps or upload_mbps" in result.stderr


def test_lowest_latency_follows_the_fastest_and_does_not_flap(lab: Lab, start: Start) -> None:
    for n, ms in ((1, 40), (2, 10), (3, 25)):
        lab.delay(n, ms)
    try:
        daemon = start(text=lab.config("lowest-latency", weights=(1, 1, 1), health=FAST))
        daemon.wait_for(r"mode: ISP2 is the fastest", timeout=20)
        assert wait_for(lambda: set(lab.connections(30)) == {2}, 10)
        mark = daemon.mark()
        lab.delay(2, 60)  # ISP3 is now the fastest, by far
        daemon.wait_for(r"mode: ISP3 is the fastest", after=mark, timeout=20)
        assert wait_for(lambda: set(lab.connections(30)) == {3}, 5)
        # Two uplinks 1 ms apart: the current one keeps new connections.
        mark = daemon.mark()
        lab.delay(1, 24)
        time.sleep(6)
        assert daemon.count(r"is the fastest", after=mark) == 0
        assert set(lab.connections(30)) == {3}
    finally:
        for n in (1, 2, 3):
            lab.delay(n, 0)


def test_least_used_spreads_over_free_capacity(lab: Lab, start: Start) -> None:
    server = lab.spawn(lab.inet, "iperf3", "-s", "-B", SERVER_ADDR)
    _capped(lab, True)
    try:
        text = lab.config("least-used", weights=(1, 1, 1), health=FAST)
        for n in (1, 2, 3):
            text = text.replace(f'interface = "wan{n}"\n',
                                f'interface = "wan{n}"\ncapacity_mbps = {RATE_MBIT}\n')
        # The bulk download is pinned to ISP1 by a rule beside the global method.
        text += ('[[rule]]\nname = "bulk"\nproto = "tcp"\ndport = [5201]\n'
                 'method = "enforced"\nuplinks = ["ISP1"]\n')
        daemon = start(text=text)
        daemon.wait_for(r"mode: ISP1 [\d.]+ Mbit/s free", timeout=20)
        tally = lab.connections(300)
        assert all(tally.get(n, 0) > 50 for n in (1, 2, 3)), tally  # all free: alike
        bulk = _download(lab, 15)
        try:
            assert wait_for(lambda: (t := lab.connections(300)).get(1, 0) < 30
                            and t.get(2, 0) > 90 and t.get(3, 0) > 90, 10), \
                lab.connections(300)
        finally:
            bulk.terminate()
            bulk.wait()
    finally:
        _capped(lab, False)
        server.terminate()
        server.wait()


SERVER_B = "203.0.113.11"


def _learned(lab: Lab, uplink: str) -> str:
    return lab.sh(lab.rtr, "nft", "list", "set", "inet", "nmbalance",
                  f"st_default__{uplink}", check=False).stdout


@pytest.fixture(scope="module")
def server_b(lab: Lab) -> str:
    """A second destination in the lab's internet."""
    lab.ip(lab.inet, "addr", "add", f"{SERVER_B}/32", "dev", "lo")
    lab.start_server(SERVER_B)
    return SERVER_B


def test_fastest_response_learns_each_destinations_fastest_uplink(
        lab: Lab, start: Start, server_b: str) -> None:
    Bus(lab)  # so that `status` asks the daemon
    # SERVER_ADDR is fastest through ISP1, SERVER_B through ISP2, ISP3 is slow to both.
    lab.delay(1, 30, SERVER_B)
    lab.delay(2, 30, SERVER_ADDR)
    lab.delay(3, 50)
    try:
        daemon = start(text=lab.config("fastest-response", weights=(1, 1, 1), health=FAST))
        daemon.wait_for("running:")
        # The first connection to each takes the weights; the race learns behind it.
        assert sum(lab.sources(1).values()) == 1
        assert sum(lab.sources(1, server=SERVER_B).values()) == 1
        assert wait_for(lambda: SERVER_ADDR in _learned(lab, "ISP1")
                        and SERVER_B in _learned(lab, "ISP2"), 10), \
            (_learned(lab, "ISP1"), _learned(lab, "ISP2"), _learned(lab, "ISP3"))
        assert {lab.isp_of(s) for s in lab.sources(40)} == {1}
        assert {lab.isp_of(s) for s in lab.sources(40, server=SERVER_B)} == {2}
        status = lab.nmbalance("status").stdout
        assert re.search(r"choice of fastest-response: \d+ destinations raced, [1-9]\d* learned",
                         status), status
        # A reload that changes the structure keeps what was learned: in place, the
        # learned sets are made again (a new timeout) and get their entries back.
        mark = daemon.mark()
        lab.write(lab.config("fastest-response", weights=(1, 1, 1),
                             health=FAST | {"reliability": 1}, top="persistence_timeout = 900"))
        daemon.send(signal.SIGHUP)
        daemon.wait_for(r"applied \(in place", after=mark)
        assert SERVER_ADDR in _learned(lab, "ISP1") and SERVER_B in _learned(lab, "ISP2")
        assert {lab.isp_of(s) for s in lab.sources(20)} == {1}
        # ... and so does a restart (on_stop = "keep").
        assert daemon.stop() == 0
        daemon = start(text=(lab.workdir / "nmbalance.toml").read_text())
        assert SERVER_ADDR in _learned(lab, "ISP1") and SERVER_B in _learned(lab, "ISP2")
        # The learned uplink dies: its entries are never used, and are learned again.
        mark = daemon.mark()
        lab.carrier(1, False)
        daemon.wait_for(r"ISP1 down", after=mark)
        assert 1 not in {lab.isp_of(s) for s in lab.sources(20)}
        assert SERVER_ADDR not in _learned(lab, "ISP1")
    finally:
        for key in list(lab.delayed):
            lab.delay(key[0], 0, key[1])


def test_a_rule_learns_beside_a_weighted_mode(lab: Lab, start: Start, server_b: str) -> None:
    """fastest-response for one destination's traffic, weights for the rest."""
    lab.delay(1, 30, SERVER_B)
    lab.delay(3, 30, SERVER_B)
    try:
        text = lab.config("weighted", weights=(1, 1, 1), health=FAST) + (
            f'[[rule]]\nname = "b"\ndst = ["{SERVER_B}/32"]\nmethod = "fastest-response"\n'
            'uplinks = ["ISP1", "ISP2", "ISP3"]\n')
        start(text=text)
        assert sum(lab.sources(1, server=SERVER_B).values()) == 1
        assert wait_for(lambda: SERVER_B in lab.sh(
            lab.rtr, "nft", "list", "set", "inet", "nmbalance", "st_Rb__ISP2").stdout, 10)
        assert {lab.isp_of(s) for s in lab.sources(30, server=SERVER_B)} == {2}
        assert len({lab.isp_of(s) for s in lab.sources(90)}) == 3  # the rest: by weight
    finally:
        for key in list(lab.delayed):
            lab.delay(key[0], 0, key[1])
