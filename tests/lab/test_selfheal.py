"""The daemon keeps what it owns as it applied it, while other programs change
the kernel under it: a firewall reload, our rules or routes deleted, a device
cycled, the config reordered, a route the kernel refuses. Someone else's
table, rules and routes stay byte-identical throughout."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable, Iterator

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import Lab, isp_gateway, isp_probe, wait_for
from tests.lab.conftest import Start

Fault = Callable[[Lab], None]


def _objects_sorted(table: str) -> str:
    """A table's listing with its objects (chains, sets, counters) in name order:
    a change in place adds objects last, a whole replace in rendering order."""
    lines = table.splitlines()
    head, objects, tail = lines[:1], [], lines[-1:]
    for line in lines[1:-1]:
        if line.startswith("\t") and not line.startswith(("\t\t", "\t}")):
            objects.append([line])
        elif line.strip() and objects:
            objects[-1].append(line)
        elif line.strip():
            head.append(line)
    return "\n".join([*head, *("\n".join(o) for o in sorted(objects)), *tail])


def our_state(lab: Lab) -> str:
    """Our table (without the counters' values: traffic moves them), rules and routes."""
    table = lab.sh(lab.rtr, "nft", "list", "table", "inet", "nmbalance", check=False).stdout
    table = _objects_sorted(re.sub(r"packets \d+ bytes \d+", "packets - bytes -", table))
    rules = [line for line in lab.ip(lab.rtr, "rule", "show").stdout.splitlines()
             if "proto 211" in line]
    routes = lab.ip(lab.rtr, "route", "show", "table", "all", "proto", "211").stdout
    return "\n".join([table, *rules, routes])


def in_order(names: list[str]) -> str:
    lines = ['snippets_dir = ""', "[health]", "interval_ms = 200"]
    for name in names:
        n = name.removeprefix("ISP")
        lines += ["[[uplink]]", f'name = "{name}"', f'interface = "wan{n}"',
                  f'probe = ["{isp_probe(int(n))}"]']
    return "\n".join([*lines, "[[lan]]", 'name = "LAN"', 'interface = "lan0"']) + "\n"


def balanced(lab: Lab, count: int = 300) -> dict[int, int]:
    tally = lab.connections(count)
    assert sum(tally.values()) == count and all(tally.get(n, 0) > 0 for n in (1, 2, 3)), tally
    return tally


@pytest.fixture
def foreign(lab: Lab) -> Iterator[str]:
    """Someone else's firewall table, rule and routes; their state as text."""
    lab.add_foreign()
    try:
        yield lab.foreign_state()
    finally:
        lab.remove_foreign()


def flush_ruleset(lab: Lab) -> None:
    lab.sh(lab.rtr, "nft", "flush", "ruleset")
    lab.add_foreign_nft()  # what the firewall that flushed would load again


def delete_table(lab: Lab) -> None:
    lab.sh(lab.rtr, "nft", "delete", "table", "inet", "nmbalance")


def delete_rules(lab: Lab) -> None:
    for priority in ("7700", "7702", "7958"):  # suppress, ISP2's fwmark and its source rule
        lab.ip(lab.rtr, "rule", "del", "priority", priority)


def delete_routes(lab: Lab) -> None:
    lab.ip(lab.rtr, "route", "del", "default", "table", "7701")
    lab.ip(lab.rtr, "route", "del", "default", "table", "7703")


def cycle_device(lab: Lab) -> None:
    """Down and up in one go (within the debounce). The kernel drops every route
    through the device; its DHCP client and the foreign route's owner put theirs back."""
    lab.sh(lab.rtr, "sh", "-c", "ip link set wan2 down && ip link set wan2 up")
    lab.ip(lab.rtr, "route", "replace", "default", "via", isp_gateway(2), "dev", "wan2",
           "metric", "102")
    lab.ip(lab.rtr, "route", "replace", "198.18.0.0/15", "via", "10.102.0.1", "table", "7750")


@pytest.mark.parametrize("fault", [flush_ruleset, delete_table, delete_rules, delete_routes,
                                   cycle_device], ids=lambda f: f.__name__)
def test_what_we_own_is_restored_and_nothing_else_touched(
        lab: Lab, start: Start, foreign: str, fault: Fault) -> None:
    daemon = start()
    applied = our_state(lab)
    balanced(lab)
    mark = daemon.mark()
    fault(lab)
    _, line = daemon.wait_for(r"drift repaired in \d+ ms", after=mark)
    assert "Traceback" not in daemon.text()
    # A cycled device may take a second round: its routes come back once it is up again.
    assert wait_for(lambda: our_state(lab) == applied, 10), (line, daemon.text())
    assert lab.foreign_state() == foreign
    balanced(lab)


def test_the_repair_names_what_drifted(lab: Lab, start: Start) -> None:
    daemon = start()
    mark = daemon.mark()
    flush_ruleset(lab)
    # (A read-back already under way may see it first: "table inet nmbalance is gone".)
    _, line = daemon.wait_for(r"drift repaired .*by nft", after=mark)
    assert re.search(r"table inet nmbalance: .*table deleted by nft \(pid \d+\)", line), line
    mark = daemon.mark()
    lab.ip(lab.rtr, "rule", "del", "priority", "7701")
    _, line = daemon.wait_for(r"drift repaired", after=mark)
    assert "1 missing rule (7701: from all fwmark 0x100/0xff00 lookup 7701)" in line, line


def test_a_reorder_on_reload_moves_no_established_flow(lab: Lab, start: Start) -> None:
    daemon = start(text=in_order(["ISP1", "ISP2", "ISP3"]))
    stream, port = lab.start_stream(6)
    mark = lab.flow_mark(port)
    assert mark in (0x100, 0x200, 0x300)
    # The same uplinks in reverse order, and a new one before them.
    (lab.workdir / "nmbalance.toml").write_text(in_order(["ISP9", "ISP3", "ISP2", "ISP1"]))
    before = {line.split()[0]: line for line in lab.ip(lab.rtr, "rule", "show").stdout.splitlines()
              if "fwmark" in line}
    log = daemon.mark()
    daemon.send(signal.SIGHUP)
    daemon.wait_for(r"reloaded .*4 uplinks", after=log)
    daemon.wait_for(r"applied .*after reload", after=log)
    assert stream.stdout is not None
    result = json.loads(stream.stdout.readline())
    stream.wait(10)
    assert result["received"] == result["sent"] > 500, result
    assert lab.flow_mark(port) == mark
    after = {line.split()[0]: line for line in lab.ip(lab.rtr, "rule", "show").stdout.splitlines()
             if "fwmark" in line}
    assert after == before  # ISP9 has no device: no table, no rule; the others as they were
    assert "ISP9 absent" in daemon.text()
    balanced(lab)


def test_a_route_the_kernel_refuses_on_reload_takes_only_that_uplink_out(
        lab: Lab, start: Start) -> None:
    daemon = start()
    path = lab.workdir / "nmbalance.toml"
    # A static gateway that is on no network of wan3: the kernel refuses the route.
    path.write_text(path.read_text().replace('interface = "wan3"',
                                             'interface = "wan3"\ngateway = "10.99.0.1"'))
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)
    _, line = daemon.wait_for(r"ISP3 out of rotation", after=mark)
    assert "10.99.0.1" in line and "retrying in 1 s" in line
    daemon.wait_for(r"applied .*ISP3 error", after=mark)
    tally = lab.connections(300)
    assert sum(tally.values()) == 300 and tally.get(3, 0) == 0 and tally.get(1) and tally.get(2)
    daemon.wait_for(r"ISP3 out of rotation: .*retrying in 2 s", after=mark, timeout=5)
    assert daemon.proc.poll() is None and "Traceback" not in daemon.text()
    # Fixed in the config: back at the next reload.
    path.write_text(path.read_text().replace('gateway = "10.99.0.1"\n', ""))
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)
    daemon.wait_for(r"applied .*ISP3 active", after=mark)
    balanced(lab)


def test_first_start_with_a_refused_route_runs_the_others(lab: Lab) -> None:
    text = lab.config(health={"interval_ms": 200}).replace(
        'interface = "wan1"', 'interface = "wan1"\ngateway = "10.99.0.1"')
    daemon = DaemonProcess(lab, lab.write(text))
    try:
        daemon.wait_for("running: ISP1 error")
        tally = lab.connections(200)
        assert sum(tally.values()) == 200 and tally.get(1, 0) == 0, tally
    finally:
        daemon.stop()
        lab.nmbalance("flush", "-c", lab.write(lab.config(), "flush.toml"))
