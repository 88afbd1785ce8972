"""Our service on a real dbus-daemon whose policy is the system bus's default
(method calls denied) plus our dbus-policy/ file: anyone may look, only root
and the netdev group may change anything, and errors are messages."""

from __future__ import annotations

import grp
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import ROOT, Lab
from labkit.managers import Bus, busctl

SYSTEM_DEFAULT = """
<policy context="default">
  <allow user="*"/>
  <deny own="*"/>
  <deny send_type="method_call"/>
  <allow send_type="signal"/>
  <allow send_requested_reply="true" send_type="method_return"/>
  <allow send_requested_reply="true" send_type="error"/>
  <allow receive_type="method_call"/>
  <allow receive_type="method_return"/>
  <allow receive_type="error"/>
  <allow receive_type="signal"/>
  <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  <allow send_destination="org.freedesktop.DBus"
         send_interface="org.freedesktop.DBus.Introspectable"/>
</policy>
"""
NAME = "io.github.nmbalance1"
MANAGER = ("/io/github/nmbalance1", "io.github.nmbalance1.Manager")
NOBODY = 65534


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Lab, Bus, DaemonProcess]]:
    with Lab(isps=2) as lab:
        policy = SYSTEM_DEFAULT + f"<include>{ROOT / 'dbus-policy' / 'io.github.nmbalance1.conf'}</include>"
        bus = Bus(lab, name="policybus", policy=policy)
        lab.bus_address = bus.address
        config = lab.write(lab.config(weights=(1,), health={"interval_ms": 200, "hold_time": 1}))
        daemon = DaemonProcess(lab, config)
        daemon.wait_for("running:")
        yield lab, bus, daemon
        daemon.stop()


def call(lab: Lab, bus: Bus, member: str, *args: str, uid: int | None = None,
         groups: str | None = None) -> tuple[int, str]:
    result = busctl(bus, lab, "call", NAME, *MANAGER, member, *args, uid=uid, groups=groups,
                    check=False)
    return result.returncode, result.stdout + result.stderr


def test_anyone_can_introspect_with_types(served: tuple[Lab, Bus, DaemonProcess]) -> None:
    lab, bus, _ = served
    manager = busctl(bus, lab, "introspect", NAME, MANAGER[0], uid=NOBODY).stdout
    for line in (".GetPlan method - s", ".Reload method - -", ".SetUplinkEnabled method sb -",
                 ".Refresh method s -", ".Uplinks property ao", ".Summary property s"):
        name, kind, *types = line.split()
        assert any(row.split()[:2 + len(types)] == [name, kind, *types]
                   for row in manager.splitlines()), (line, manager)
    uplink = busctl(bus, lab, "introspect", NAME, "/io/github/nmbalance1/uplink/ISP1",
                    uid=NOBODY).stdout
    for prop, sig in (("State", "s"), ("Gateway", "s"), ("GatewaySource", "s"), ("Weight", "d"),
                      ("LatencyMs", "d"), ("LossPercent", "d"), ("Enabled", "b")):
        row = next(r for r in uplink.splitlines() if r.startswith(f".{prop} "))
        assert row.split()[1:3] == ["property", sig] and "emits-change" in row


def test_anyone_can_read_but_not_change(served: tuple[Lab, Bus, DaemonProcess]) -> None:
    lab, bus, _ = served
    out = busctl(bus, lab, "get-property", NAME, "/io/github/nmbalance1/uplink/ISP2",
                 "io.github.nmbalance1.Uplink", "Gateway", uid=NOBODY).stdout
    assert out.strip() == 's "10.102.0.1"'
    code, out = call(lab, bus, "GetPlan", uid=NOBODY)
    assert code == 0 and "table 7701" in out
    for member, args in (("Reload", ()), ("SetUplinkEnabled", ("sb", "ISP2", "false")),
                         ("Refresh", ("s", "x"))):
        code, out = call(lab, bus, member, *args, uid=NOBODY)
        assert code != 0 and "Access denied" in out, (member, out)


def test_the_netdev_group_and_root_may_steer(served: tuple[Lab, Bus, DaemonProcess]) -> None:
    lab, bus, daemon = served
    netdev = grp.getgrnam("netdev").gr_gid
    assert lab.connections(100).get(2, 0) > 0
    flows = lab.sh(lab.rtr, "conntrack", "-L", "--mark", f"{0x200}/{0xff00}").stdout.splitlines()
    assert flows
    code, out = call(lab, bus, "SetUplinkEnabled", "sb", "ISP2", "false", uid=NOBODY,
                     groups=str(netdev))
    assert code == 0, out
    daemon.wait_for(r"applied .*ISP2 left-out")
    state = busctl(bus, lab, "get-property", NAME, "/io/github/nmbalance1/uplink/ISP2",
                   "io.github.nmbalance1.Uplink", "State", "Enabled", uid=NOBODY).stdout.split()
    assert state == ['s', '"left-out"', "b", "false"]
    assert lab.connections(100) == {1: 100}
    # Left out, not down: its established flows keep their conntrack entries.
    still = lab.sh(lab.rtr, "conntrack", "-L", "--mark", f"{0x200}/{0xff00}").stdout.splitlines()
    assert len(still) >= len(flows)
    # Left out and then down: now its flows go (they have nowhere to go).
    mark = daemon.mark()
    lab.carrier(2, False)
    daemon.wait_for(r"applied .*ISP2 down.*dropping conntrack entries of ISP2", after=mark)
    daemon.wait_for(r"conntrack entries of ISP2 dropped in", after=mark)
    assert lab.sh(lab.rtr, "conntrack", "-L", "--mark", f"{0x200}/{0xff00}").stdout == ""
    lab.carrier(2, True)
    daemon.wait_for(r"ISP2 up", after=mark, timeout=20)
    code, out = call(lab, bus, "SetUplinkEnabled", "sb", "ISP2", "true")  # as root
    assert code == 0, out
    assert sum(lab.connections(200).values()) == 200 and lab.connections(200).get(2, 0) > 0


def test_errors_reach_the_caller_as_messages(served: tuple[Lab, Bus, DaemonProcess]) -> None:
    lab, bus, daemon = served
    code, out = call(lab, bus, "SetUplinkEnabled", "sb", "NOPE", "true")
    assert code != 0 and "no uplink named 'NOPE' (configured: ISP1, ISP2)" in out, out
    path = lab.workdir / "nmbalance.toml"
    good = path.read_text()
    path.write_text(good.replace("weight = 1", "weight = -1", 1))
    try:
        code, out = call(lab, bus, "Reload")
        assert code != 0 and "nmbalance.toml:" in out and "weight" in out, out
        assert "Traceback" not in out and "Traceback" not in daemon.text()
    finally:
        path.write_text(good)
    code, out = call(lab, bus, "Reload")
    assert code == 0, out


def cli(lab: Lab, *args: str, uid: int | None = None, groups: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The nmbalance command on the policy bus, as root or as another user."""
    cmd = ["ip", "netns", "exec", lab.rtr]
    if uid is not None:
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}",
                f"--groups={groups}" if groups else "--clear-groups"]
    return subprocess.run([*cmd, sys.executable, "-m", "nmbalance", *args], text=True,
                          capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT),
                                                        DBUS_SYSTEM_BUS_ADDRESS=lab.bus_address))


def test_enable_and_disable_on_the_real_policy(served: tuple[Lab, Bus, DaemonProcess]) -> None:
    lab, _, daemon = served
    refused = cli(lab, "disable", "ISP2", uid=NOBODY)
    assert refused.returncode == 1, refused
    assert "not allowed to call SetUplinkEnabled" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    # Anyone may read the status and the metrics.
    shown = cli(lab, "status", "--json", uid=NOBODY)
    assert shown.returncode == 0 and '"source": "daemon"' in shown.stdout, shown
    metrics = cli(lab, "metrics", uid=NOBODY)
    assert metrics.returncode == 0 and 'nmbalance_uplink_weight{uplink="ISP1"}' in metrics.stdout
    mark = daemon.mark()
    done = cli(lab, "disable", "ISP2")
    assert done.returncode == 0 and "ISP2: disabled" in done.stdout, done
    daemon.wait_for(r"applied .*ISP2 left-out", after=mark)
    assert lab.connections(60) == {1: 60}
    unknown = cli(lab, "enable", "ISP9")
    assert unknown.returncode == 2 and "no uplink named 'ISP9'" in unknown.stderr, unknown
    netdev = str(grp.getgrnam("netdev").gr_gid)
    back = cli(lab, "enable", "ISP2", uid=NOBODY, groups=netdev)
    assert back.returncode == 0, back
    daemon.wait_for(r"applied .*ISP2 active", after=mark)


def test_enable_without_a_daemon_says_so() -> None:
    with Lab(isps=1) as lab:
        Bus(lab)
        result = cli(lab, "disable", "ISP1")
        assert result.returncode == 1
        assert "no nmbalance daemon runs here" in result.stderr, result.stderr
        result = cli(lab, "metrics")
        assert result.returncode == 1 and "no nmbalance daemon" in result.stderr
        # Without the daemon, the kernel's nft table is root's to read: said, not guessed.
        result = cli(lab, "status", uid=NOBODY)
        assert result.returncode == 1 and "only root may read" in result.stderr, result
