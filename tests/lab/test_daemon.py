"""`nmbalance run` against real links: carrier loss, silent failures, flapping,
fail-open, reloads, stopping, crashing, hooks and systemd notifications.

Traffic is counted at the inet server by masqueraded source. Timings get
generous slack here; bench/failover.py measures the real figures."""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

from labkit.lab import Lab, isp_gateway, wait_for
from tests.lab.conftest import INTERVAL, Start


def ruleset(lab: Lab) -> str:
    return lab.sh(lab.rtr, "nft", "list", "table", "inet", "nmbalance", check=False).stdout


def conntrack_count(lab: Lab, mark: int) -> int:
    out = lab.sh(lab.rtr, "conntrack", "-L", "--mark", f"{mark}/{0xff00}").stdout
    return len(out.splitlines())


def test_carrier_loss_takes_the_uplink_out_and_back(lab: Lab, start: Start) -> None:
    daemon = start()
    before = lab.connections(300)
    assert before.get(2, 0) > 0
    assert conntrack_count(lab, 0x100) > 0 and conntrack_count(lab, 0x200) > 0
    mark = daemon.mark()
    pulled = time.monotonic()
    lab.carrier(2, False)
    applied, line = daemon.wait_for(r"applied .*ISP2 down", after=mark)
    assert applied - pulled < 2.0, line
    assert "ISP2 down: no carrier" in daemon.text()
    # New connections left ISP2 with that apply; its flows go in the background.
    assert "dropping conntrack entries of ISP2" in line
    daemon.wait_for(r"conntrack entries of ISP2 dropped in [0-9.]+ ms", after=mark)
    # Only the dead uplink's flows are dropped; the others keep theirs.
    assert conntrack_count(lab, 0x200) == 0
    assert conntrack_count(lab, 0x100) > 0 and conntrack_count(lab, 0x300) > 0
    tally = lab.connections(300)
    assert tally.get(2, 0) == 0 and sum(tally.values()) == 300, tally
    mark = daemon.mark()
    lab.carrier(2, True)
    daemon.wait_for(r"ISP2 up", after=mark)
    daemon.wait_for(r"applied .*ISP2 active", after=mark)
    assert lab.connections(300).get(2, 0) > 0


def test_lost_address_takes_the_uplink_out_at_once(lab: Lab, start: Start) -> None:
    daemon = start()
    mark = daemon.mark()
    lab.ip(lab.rtr, "addr", "del", "10.102.0.2/24", "dev", "wan2")
    try:
        _, line = daemon.wait_for(r"ISP2 down", after=mark)
        assert line.endswith("ISP2 down: no address")
        # Its routes went with the address, so the plan also has no gateway for it.
        daemon.wait_for(r"applied .*ISP2 (down|no-gateway),", after=mark)
        tally = lab.connections(200)
        assert tally.get(2, 0) == 0 and sum(tally.values()) == 200, tally
    finally:
        lab.ip(lab.rtr, "addr", "add", "10.102.0.2/24", "dev", "wan2", check=False)
        lab.ip(lab.rtr, "route", "replace", "default", "via", isp_gateway(2), "dev", "wan2",
               "metric", "102")
    daemon.wait_for(r"applied .*ISP2 active", after=mark)


def test_a_new_gateway_is_followed_from_the_route_event(lab: Lab, start: Start) -> None:
    """What a DHCP renewal with another router does to the kernel's routes."""
    daemon = start()
    lab.ip(lab.isp(1), "addr", "add", "10.101.0.254/24", "dev", "rtr")
    mark = daemon.mark()
    lab.ip(lab.rtr, "route", "replace", "default", "via", "10.101.0.254", "dev", "wan1",
           "metric", "101")
    try:
        daemon.wait_for(r"applied ", after=mark)
        table = lab.ip(lab.rtr, "route", "show", "table", "7701").stdout
        assert "default via 10.101.0.254 dev wan1 proto 211" in table, table
        assert lab.connections(300).get(1, 0) > 0
    finally:
        lab.ip(lab.rtr, "route", "replace", "default", "via", isp_gateway(1), "dev", "wan1",
               "metric", "101")
        lab.ip(lab.isp(1), "addr", "del", "10.101.0.254/24", "dev", "rtr")


def test_blackhole_goes_down_within_the_probe_budget_and_recovers_only_after_hold(
        lab: Lab, start: Start) -> None:
    daemon = start()
    mark = daemon.mark()
    cut = time.monotonic()
    lab.blackhole(3, True)
    down, line = daemon.wait_for(r"ISP3 down", after=mark)
    assert "3 probes lost in a row to 198.51.100.3" in line
    assert down - cut <= INTERVAL * 3 + 1.0, down - cut
    daemon.wait_for(r"applied .*ISP3 down", after=mark)
    tally = lab.connections(300)
    assert tally.get(3, 0) == 0 and sum(tally.values()) == 300, tally
    mark = daemon.mark()
    healed = time.monotonic()
    lab.blackhole(3, False)
    recovering, line = daemon.wait_for(r"ISP3 recovering", after=mark)
    # Replies in a row, and the outage's losses out of the 20-probe window (at most
    # min_packet_loss, 5 %, of it left): 19 replies after a full outage.
    assert re.search(r"ISP3 recovering: 19 replies in a row, loss 5% over the last 20 probes; "
                     r"holding 1 s$", line), line
    up, _ = daemon.wait_for(r"ISP3 up", after=mark)
    # Those replies (the first may come at once) and then the hold time.
    assert recovering - healed >= 18 * INTERVAL - 0.05
    assert up - recovering >= 1.0 - 0.05
    # Only then does ISP3 take new connections again.
    back, _ = daemon.wait_for(r"applied .*ISP3 active", after=mark)
    assert back >= up
    assert lab.connections(300).get(3, 0) > 0


def test_a_flapping_uplink_causes_a_bounded_number_of_reconfigurations(
        lab: Lab, start: Start) -> None:
    daemon = start()
    mark = daemon.mark()
    end = time.monotonic() + 10
    up = True
    while time.monotonic() < end:
        up = not up
        lab.carrier(1, up)
        time.sleep(0.2)
    lab.carrier(1, True)
    applies = daemon.count(r"applied ", after=mark)
    downs = daemon.count(r"ISP1 down:", after=mark)
    assert 1 <= applies <= 3, daemon.text()
    assert downs == 1, daemon.text()
    daemon.wait_for(r"ISP1 up", after=mark, timeout=15)


def test_fail_open_when_every_probe_target_is_unreachable(lab: Lab, start: Start) -> None:
    daemon = start()
    mark = daemon.mark()
    for n in (1, 2, 3):
        lab.block_probes(n, True)
    daemon.wait_for(r"failing open over those with carrier: ISP1, ISP2, ISP3", after=mark)
    tally = lab.connections(600)
    assert sum(tally.values()) == 600 and all(tally.get(n, 0) > 0 for n in (1, 2, 3)), tally
    # One uplink answering again ends fail-open: it alone takes new connections.
    mark = daemon.mark()
    lab.block_probes(2, False)
    daemon.wait_for(r"applied .*ISP1 down, ISP2 active 100%, ISP3 down", after=mark)
    assert lab.connections(200) == {2: 200}


def test_reload_keeps_the_running_config_when_the_new_one_is_bad(lab: Lab, start: Start) -> None:
    daemon = start()
    table = ruleset(lab)
    path = lab.workdir / "nmbalance.toml"
    good = path.read_text()
    path.write_text(good.replace("weight = 3", "weight = -3"))
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)
    _, line = daemon.wait_for(r"reload refused", after=mark)
    assert "nmbalance.toml:" in line and "weight" in line
    assert daemon.proc.poll() is None
    assert ruleset(lab) == table
    path.write_text(good.replace("weight = 3", "weight = 1").replace("weight = 2", "weight = 1"))
    mark = daemon.mark()
    daemon.send(signal.SIGHUP)
    daemon.wait_for(r"reloaded", after=mark)
    daemon.wait_for(r"applied .*ISP1 active 33%, ISP2 active 33%, ISP3 active 33%", after=mark)


def test_sigterm_keeps_state_by_default_and_flushes_when_configured(
        lab: Lab, start: Start) -> None:
    daemon = start()
    assert daemon.stop() == 0
    assert "stopped; the last applied state stays in place" in daemon.text()
    assert "table inet nmbalance" in ruleset(lab)
    daemon = start(extra="[daemon]\non_stop = \"flush\"\n")
    assert daemon.stop() == 0
    assert ruleset(lab) == ""
    rules = lab.ip(lab.rtr, "rule", "show").stdout
    assert "lookup 77" not in rules and "7700:" not in rules
    assert lab.ip(lab.rtr, "route", "show", "proto", "211", "table", "all").stdout == ""


def test_kill_9_leaves_the_last_state_and_the_next_start_reconciles(
        lab: Lab, start: Start) -> None:
    daemon = start()
    lab.carrier(3, False)
    daemon.wait_for(r"applied .*ISP3 down")
    live_before = lab.sh(lab.rtr, "nft", "-j", "list", "set", "inet", "nmbalance", "live").stdout
    daemon.stop(signal.SIGKILL)
    # The kernel keeps what was last applied: ISP3 still out of rotation.
    assert lab.sh(lab.rtr, "nft", "-j", "list", "set", "inet", "nmbalance", "live"
                  ).stdout == live_before
    assert lab.connections(200).get(3, 0) == 0
    lab.carrier(3, True)
    daemon = start()
    _, line = daemon.wait_for(r"applied \(contents")  # same structure: no table rebuild
    assert "ISP3 active" in line
    assert lab.connections(300).get(3, 0) > 0


def wait_for_file(path: Path, timeout: float = 5.0) -> Path:
    """Hooks and mail run after the log line, on their own worker."""
    assert wait_for(path.exists, timeout), f"{path} never appeared"
    time.sleep(0.1)  # let the writer finish
    return path


def write_hook(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_hooks_run_with_the_event_environment_and_a_hung_hook_is_killed(
        lab: Lab, start: Start) -> None:
    hooks = lab.workdir / "hooks"
    out = lab.workdir / "hook-out"
    out.mkdir(exist_ok=True)
    write_hook(hooks / "down", "10-hang", f"echo $$ > {out}/hang.pid\nexec sleep 60\n")
    write_hook(hooks / "down", "20-env", f"env > {out}/down.env\n")
    write_hook(hooks / "up", "10-env", f"env > {out}/up.env\n")
    write_hook(hooks / "long-down", "10-env", f"env > {out}/long-down.env\n")
    writable = write_hook(hooks / "down", "30-writable", f"touch {out}/writable-ran\n")
    writable.chmod(0o777)
    daemon = start(health={"long_down_time": 2},
                   extra=f'[daemon]\nhooks_dir = "{hooks}"\nhook_timeout = 1\n')
    mark = daemon.mark()
    lab.carrier(2, False)
    daemon.wait_for(r"hook .*10-hang killed after 1 s", after=mark)
    hung = int((out / "hang.pid").read_text())
    assert not Path(f"/proc/{hung}").exists()  # killed and reaped
    lines = wait_for_file(out / "down.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["EVENT"] == "down" and env["UPLINK"] == "ISP2" and env["INTERFACE"] == "wan2"
    assert env["STATE"] == "down" and env["PREVIOUS_STATE"] == "up" and env["FAMILY"] == "4"
    assert env["REASON"] == "no carrier" and env["GATEWAY"] == isp_gateway(2)
    assert env["ADDRESS"] == "10.102.0.2"
    assert not (out / "writable-ran").exists()
    assert "30-writable skipped" in daemon.text()
    long_down = wait_for_file(out / "long-down.env").read_text()
    assert "EVENT=long-down" in long_down and "UPLINK=ISP2" in long_down
    assert "REASON=down for 2 s" in long_down
    lab.carrier(2, True)
    daemon.wait_for(r"ISP2 up", after=mark)
    up_env = wait_for_file(out / "up.env").read_text()
    assert "EVENT=up" in up_env and "PREVIOUS_STATE=down" in up_env


def test_warn_email_goes_to_sendmail(lab: Lab, start: Start) -> None:
    spool = lab.workdir / "mail"
    fake = lab.workdir / "sendmail"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {spool}.args\ncat > {spool}\n")
    fake.chmod(0o755)
    daemon = start(top='warn_email = "ops@example.net"',
                   extra=f'[daemon]\nsendmail = "{fake}"\n')
    lab.blackhole(1, True)
    daemon.wait_for(r"ISP1 down")
    message = wait_for_file(spool).read_text()
    assert "To: ops@example.net" in message
    assert "ISP1 down: 3 probes lost in a row to 198.51.100.1" in message
    assert Path(f"{spool}.args").read_text().split() == ["-t", "-oi"]


def test_probes_use_unprivileged_sockets_where_allowed(lab: Lab, start: Start) -> None:
    lab.sh(lab.rtr, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
    try:
        daemon = start()
        assert "probes use unprivileged (datagram) ICMP sockets" in daemon.text()
        mark = daemon.mark()
        lab.blackhole(2, True)
        _, line = daemon.wait_for(r"ISP2 down", after=mark)
        assert "to 198.51.100.2" in line
    finally:
        lab.sh(lab.rtr, "sysctl", "-qw", "net.ipv4.ping_group_range=1 0")


def test_systemd_notifications(lab: Lab, start: Start) -> None:
    path = lab.workdir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        daemon = start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        seen: list[str] = []

        def until(field: str) -> None:
            while not any(field in m for m in seen):
                seen.append(sock.recv(4096).decode())

        until("READY=1")
        ready = next(m for m in seen if "READY=1" in m)
        assert f"MAINPID={daemon.proc.pid}" in ready and "STATUS=ISP1 active" in ready
        seen.clear()
        until("WATCHDOG=1")
        seen.clear()
        daemon.send(signal.SIGHUP)
        until("RELOADING=1")
        until("READY=1")
        daemon.stop()
        until("STOPPING=1")
    finally:
        sock.close()
