"""Looking into a running system (issue 13) against the real datapath: status
from the daemon and from the kernel in one schema, explain's answers against
where real connections go, connections against the counting server, doctor
on a good lab and with faults, metrics through a real OpenMetrics parser,
and status --watch in a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as prometheus_text

from labkit.lab import ROOT, SERVER_ADDR, Lab, wait_for
from labkit.managers import Bus
from nmbalance.report.status import schema
from tests.lab.conftest import FAST, Start

WEB_PORT = 8443
RULES = f"""
[[rule]]
name = "web"
proto = "tcp"
dport = [{WEB_PORT}]
method = "enforced"
uplinks = ["ISP3"]
[[rule]]
name = "second-lan"
src = ["10.252.0.0/24"]
method = "priority"
uplinks = ["ISP1", "ISP2"]
"""


@pytest.fixture(scope="module")
def bus(lab: Lab) -> Bus:
    """The lab's own system bus: `status` asks the daemon over it."""
    return Bus(lab)


@pytest.fixture(scope="module")
def lan2(lab: Lab) -> str:
    ns = lab.add_lan(2)
    lab.start_server(port=WEB_PORT)
    return ns


def status(lab: Lab, *args: str) -> dict[str, Any]:
    result = lab.nmbalance("status", "--json", *args)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(doc, schema())
    return doc


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in doc["uplinks"]}


def with_lan2(lab: Lab) -> str:
    return lab.config(health=FAST, extra=RULES + '[[lan]]\nname = "LAN2"\ninterface = "lan2"\n')


def test_status_has_one_schema_from_the_daemon_and_from_the_kernel(
        lab: Lab, bus: Bus, start: Start) -> None:
    daemon = start()
    path = lab.write(lab.config(health=FAST), "status.toml")
    lab.connections(60)
    docs: list[dict[str, Any]] = []

    def measured() -> bool:
        docs.append(status(lab, "-c", path))
        return all(u["measured_share"] is not None for u in docs[-1]["uplinks"])

    assert wait_for(measured, timeout=20, interval=0.5), docs[-1]
    live = docs[-1]
    assert live["source"] == "daemon" and live["mode"] == "weighted"
    by_name = rows(live)
    assert {n: u["state"] for n, u in by_name.items()} == dict.fromkeys(
        ("ISP1", "ISP2", "ISP3"), "active")
    assert by_name["ISP2"]["share"] == pytest.approx(0.5, abs=0.01)
    assert by_name["ISP1"]["gateway"] == "10.101.0.1"
    assert by_name["ISP1"]["address"] == "10.101.0.2"
    assert by_name["ISP1"]["latency_ms"] is not None
    assert sum(u["new_connections"] for u in by_name.values()) >= 60
    table = lab.nmbalance("status", "-c", path).stdout
    assert re.search(r"ISP2\s+active\s+50\.0%", table), table
    daemon.stop()
    # No daemon: the same schema, from the kernel; without any config, the names
    # come from our table, not a made-up row.
    for args in (("-c", path), ("-c", "/etc/nmbalance/nmbalance.toml")):
        kernel = status(lab, *args)
        assert kernel["source"] == "kernel" and kernel["installed"]
        found = rows(kernel)
        assert sorted(found) == ["ISP1", "ISP2", "ISP3"], kernel
        assert found["ISP2"]["share"] == pytest.approx(0.5, abs=0.01)
        assert found["ISP3"]["state"] == "active"
        assert found["ISP1"]["gateway"] == "10.101.0.1"
        assert found["ISP1"]["interface"] == "wan1"
        assert found["ISP1"]["address"] == "10.101.0.2"
        assert found["ISP1"]["new_connections"] == by_name["ISP1"]["new_connections"]
    lab.nmbalance("flush", "-c", path)
    empty = status(lab, "-c", "/etc/nmbalance/nmbalance.toml")
    assert empty["uplinks"] == [] and not empty["installed"]


def explain(lab: Lab, path: str, *args: str) -> dict[str, Any]:
    result = lab.nmbalance("explain", "-c", path, "--json", *args)
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_explain_says_where_real_connections_go(lab: Lab, bus: Bus, lan2: str,
                                                start: Start) -> None:
    daemon = start(text=with_lan2(lab))
    path = lab.write(with_lan2(lab), "status.toml")
    cases = [
        # (explain's arguments, real connections: LAN namespace, port)
        (("--src", "10.250.0.2", "--dst", SERVER_ADDR, "--proto", "tcp", "--dport",
          str(WEB_PORT)), (lab.lan, WEB_PORT)),
        (("--src", "10.252.0.2", "--dst", SERVER_ADDR, "--proto", "tcp", "--dport", "8000"),
         (lan2, 8000)),
        (("--src", "10.250.0.2", "--dst", SERVER_ADDR, "--proto", "tcp", "--dport", "8000"),
         (lab.lan, 8000)),
    ]
    answers = [explain(lab, path, *args) for args, _ in cases]
    assert answers[0]["rule"] == "web" and answers[0]["uplink"] == "ISP3"
    assert answers[1]["rule"] == "second-lan" and answers[1]["uplink"] == "ISP2"
    assert answers[2]["rule"] is None and answers[2]["weights_from"] == "kernel"
    assert answers[2]["distribution"] == pytest.approx(
        {"ISP1": 1 / 6, "ISP2": 0.5, "ISP3": 1 / 3}, abs=0.01)
    for answer, (_, (ns, port)) in zip(answers, cases, strict=True):
        tally = lab.connections(120, ns=ns, port=port)
        went = {f"ISP{n}" for n, count in tally.items() if count}
        if answer["uplink"]:
            assert went == {answer["uplink"]}, (answer, tally)
        else:
            assert went == set(answer["distribution"]), (answer, tally)
    # Left out over the bus: explain follows the daemon, and so do the connections.
    assert lab.nmbalance("disable", "ISP2").returncode == 0
    moved = explain(lab, path, "--src", "10.252.0.2", "--dst", SERVER_ADDR,
                    "--proto", "tcp", "--dport", "8000")
    assert moved["uplink"] == "ISP1", moved
    assert "left-out" in moved["excluded"]["ISP2"]
    assert set(lab.connections(60, ns=lan2)) == {1}
    never = explain(lab, path, "--dst", "10.250.0.2")
    assert not never["balanced"] and not never["uplink"]
    text = lab.nmbalance("explain", "-c", path, "--dst", SERVER_ADDR, "--proto", "tcp",
                         "--dport", str(WEB_PORT)).stdout
    assert "rule web matches" in text and "=> ISP3" in text
    daemon.stop()


def test_connections_match_the_counting_server(lab: Lab, bus: Bus, start: Start) -> None:
    start()
    path = lab.write(lab.config(health=FAST), "status.toml")
    lab.sh(lab.rtr, "conntrack", "-F", check=False)
    tally = lab.connections(150)
    result = lab.nmbalance("connections", "-c", path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    counted = {u["name"]: u["connections"] for u in report["uplinks"]}
    # The conntrack entries of the LAN's connections stay (TIME_WAIT) after they close.
    assert counted == {f"ISP{n}": tally.get(n, 0) for n in (1, 2, 3)}, (counted, tally)
    top = {u["name"]: u["top_sources"] for u in report["uplinks"]}
    assert top["ISP2"][0] == {"address": "10.250.0.2", "connections": tally[2]}
    text = lab.nmbalance("connections", "-c", path).stdout
    assert re.search(rf"ISP2\s+{tally[2]}\s", text), text


def doctor(lab: Lab, path: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = lab.nmbalance("doctor", "-c", path, "--json")
    found = {c["name"]: c for c in json.loads(result.stdout)}
    return result.returncode, found


def test_doctor_passes_a_good_lab_and_names_each_fault(lab: Lab, bus: Bus, start: Start) -> None:
    start()
    path = lab.write(lab.config(health=FAST), "status.toml")
    lab.connections(30)  # a LAN flow through each uplink, for the NAT check
    code, found = doctor(lab, path)
    assert code == 0, found
    for name in ("applied", "forwarding", "LAN LAN", "ISP1 probes", "ISP2 gateway",
                 "ISP3 nat", "rp_filter", "networkd"):
        assert found[name]["verdict"] == "pass", found[name]
    assert "answered" in found["ISP2 probes"]["why"] and "table 7702" in found["ISP2 probes"]["why"]
    text = lab.nmbalance("doctor", "-c", path).stdout
    assert re.search(r"^PASS  ISP1 probes: ", text, re.M) and "0 failed" in text
    # Forwarding off.
    lab.sh(lab.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    try:
        code, found = doctor(lab, path)
        assert code == 1 and found["forwarding"]["verdict"] == "fail", found["forwarding"]
        assert "ip_forward" in found["forwarding"]["fix"]
    finally:
        lab.sh(lab.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # A silent failure upstream of ISP2.
    lab.blackhole(2, True)
    try:
        code, found = doctor(lab, path)
        assert code == 1 and found["ISP2 probes"]["verdict"] == "fail", found["ISP2 probes"]
        assert found["ISP1 probes"]["verdict"] == "pass"
    finally:
        lab.blackhole(2, False)
    # No gateway for ISP3: its route gone (as when DHCP gave none).
    lab.ip(lab.rtr, "route", "del", "default", "dev", "wan3")
    try:
        code, found = doctor(lab, path)
        assert code == 1 and found["ISP3 gateway"]["verdict"] == "fail", found.get("ISP3 gateway")
        assert "gateway = " in found["ISP3 gateway"]["fix"]
    finally:
        lab.ip(lab.rtr, "route", "add", "default", "via", "10.103.0.1", "dev", "wan3",
               "metric", "103")


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_parse_and_agree_with_status(lab: Lab, bus: Bus, start: Start) -> None:
    port = 9617
    textfile = lab.workdir / "nmbalance.prom"
    start(top="", extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\ntextfile = "{textfile}"\n'
                        "textfile_interval = 5\n")
    path = lab.write(lab.config(health=FAST), "status.toml")
    lab.connections(60)
    time.sleep(6)  # a counter sample after the traffic (the daemon samples every 5 s)
    result = lab.nmbalance("metrics")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("# EOF\n")
    got = metrics_of(result.stdout)
    doc = status(lab, "-c", path)
    for u in doc["uplinks"]:
        key = (("uplink", u["name"]),)
        assert got[("nmbalance_uplink_state", tuple(sorted(
            {"uplink": u["name"], "nmbalance_uplink_state": u["state"]}.items())))] == 1
        assert got[("nmbalance_uplink_share_ratio", key)] == u["share"]
        assert got[("nmbalance_uplink_weight", key)] == u["weight"]
        assert got[("nmbalance_uplink_new_connections_total", key)] == u["new_connections"]
        assert got[("nmbalance_uplink_transmit_packets_total", key)] > 0
    assert got[("nmbalance_applies_total", ())] >= 1
    # The HTTP endpoint, inside the router's namespace, and the textfile.
    fetch = ("import urllib.request as u, sys; r = u.Request('http://127.0.0.1:{port}/metrics', "
             "headers={{'Accept': sys.argv[1]}}); print(u.urlopen(r, timeout=5).read().decode(), "
             "end='')")
    for accept in ("application/openmetrics-text; version=1.0.0", "text/plain"):
        served = subprocess.run(
            ["ip", "netns", "exec", lab.rtr, sys.executable, "-c", fetch.format(port=port),
             accept], text=True, capture_output=True, check=True).stdout
        parsed = metrics_of(served) if "openmetrics" in accept else {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in prometheus_text(served) for s in f.samples}
        assert parsed[("nmbalance_uplink_weight", (("uplink", "ISP2"),))] == 3.0
    # node_exporter's textfile collector reads the Prometheus text format.
    assert wait_for(lambda: textfile.exists() and "ISP2" in textfile.read_text(), timeout=15)
    assert oct(textfile.stat().st_mode & 0o777) == "0o644"
    from_file = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for f in prometheus_text(textfile.read_text()) for s in f.samples}
    assert from_file[("nmbalance_uplink_weight", (("uplink", "ISP2"),))] == 3.0


def pty_run(lab: Lab, *args: str) -> tuple[int, int]:
    """`nmbalance ARGS` in the router's namespace on a pseudo-terminal: (pid, fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command
        env = dict(os.environ, PYTHONPATH=str(ROOT), DBUS_SYSTEM_BUS_ADDRESS=lab.bus_address,
                   TERM="xterm", LANG="C.UTF-8", PYTHONIOENCODING="utf-8")
        os.execvpe("ip", ["ip", "netns", "exec", lab.rtr, sys.executable, "-m", "nmbalance",
                          *args], env)
    return pid, fd


def read_until(fd: int, pattern: str, timeout: float, seen: list[str]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen.append(os.read(fd, 65536).decode(errors="replace"))
            except OSError:
                return False
            # Only the last redraw counts: the screen is cleared before each one.
            screen = "".join(seen).rsplit("\x1b[H\x1b[J", 1)[-1]
            if re.search(pattern, screen, re.M):
                return True
    return False


@pytest.fixture
def watching(lab: Lab) -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_status_watch_redraws_a_change_within_two_seconds(
        lab: Lab, bus: Bus, start: Start, watching: list[int]) -> None:
    start()
    path = lab.write(lab.config(health=FAST), "status.toml")
    pid, fd = pty_run(lab, "status", "--watch", "-c", path)
    watching.append(pid)
    seen: list[str] = []
    assert read_until(fd, r"^ISP2\s+active", 15, seen), "".join(seen)[-2000:]
    pulled = time.monotonic()
    lab.carrier(2, False)
    assert read_until(fd, r"^ISP2\s+down", 10, seen), "".join(seen)[-2000:]
    assert time.monotonic() - pulled < 2.0 + 1.0  # the daemon's ~20 ms, a 1 s redraw, slack
    assert "rtt  " in "".join(seen)  # the latency sparkline
    os.write(fd, b"\x03")  # Ctrl-C
    _, code = os.waitpid(pid, 0)
    watching.remove(pid)
    tail = "".join(seen)
    with_rest = tail
    try:
        while select.select([fd], [], [], 0.5)[0]:
            with_rest += os.read(fd, 65536).decode(errors="replace")
    except OSError:
        pass
    assert os.waitstatus_to_exitcode(code) == 0, with_rest[-1000:]
    assert "Traceback" not in with_rest
    os.close(fd)
    lab.carrier(2, True)
    # Not a terminal: one line per change.
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.rtr, sys.executable, "-m", "nmbalance", "status",
         "--watch", "-c", path], text=True, stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT), DBUS_SYSTEM_BUS_ADDRESS=lab.bus_address))
    lab.procs.append(proc)
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(3)]
    assert all(re.match(r"\d\d:\d\d:\d\d ISP\d ", line) for line in first), first
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def test_apply_with_no_usable_uplink_says_so(router: Lab, write_config: Any) -> None:
    path = write_config('snippets_dir = ""\n[[uplink]]\nname = "A"\ninterface = "nothere0"\n'
                        '[[uplink]]\nname = "B"\ninterface = "nothere1"\n', "none.toml")
    result = router.nmbalance("apply", "-c", path)
    assert result.returncode == 1, result
    assert "A: absent" in result.stdout
    assert "no uplink can take traffic" in result.stderr


def test_ipv6_facts_are_shown_and_ipv6_left_alone_is_said(lab: Lab, bus: Bus,
                                                          start: Start) -> None:
    """Last in this module: it gives the lab's ISP2 IPv6 for good."""
    lab.add_ipv6(via=2)
    # ISP1's router announces itself link-local, as most do.
    lab.ip(lab.rtr, "-6", "route", "add", "default", "via", "fe80::1", "dev", "wan1",
           "metric", "2048")
    text = lab.config(health=FAST).replace('interface = "wan3"\n',
                                           'interface = "wan3"\ngateway6 = "fe80::3"\n')
    start(text=text)
    path = lab.write(text, "status.toml")
    found = rows(status(lab, "-c", path))
    assert (found["ISP3"]["gateway6"], found["ISP3"]["gateway_source6"]) == ("fe80::3", "static")
    assert (found["ISP2"]["address6"], found["ISP2"]["gateway6"],
            found["ISP2"]["gateway_source6"]) == ("2001:db8:102::2", "2001:db8:102::1", "kernel")
    assert found["ISP1"]["address6"] is None and found["ISP1"]["gateway6"] == "fe80::1"
    text = lab.nmbalance("status", "-c", path).stdout
    assert "IPv6 2001:db8:102::2 via 2001:db8:102::1 (kernel): the system's routes" in text
    code, checks = doctor(lab, path)
    assert code == 0 and checks["ipv6"]["verdict"] == "warn", checks["ipv6"]
    assert "ISP1 (via fe80::1 on wan1), ISP2 (via 2001:db8:102::1 on wan2) have IPv6" in \
        checks["ipv6"]["why"]
