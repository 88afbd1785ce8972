"""kill -9 inside the kernel window, of `nmbalance apply` and of the daemon:
every marked flow still has somewhere to go (make before break), and the
next run puts the kernel exactly where a clean run would.

Each trial switches between two configs that differ in uplinks, so both the
routing and the nft structure change, and kills at a random moment within
the time the switch takes (measured first)."""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import ROOT, Lab
from tests.lab.test_selfheal import our_state

TRIALS_APPLY = int(os.environ.get("NMB_KILL_TRIALS_APPLY", "100"))
TRIALS_DAEMON = int(os.environ.get("NMB_KILL_TRIALS_DAEMON", "50"))


@pytest.fixture
def configs(lab: Lab) -> Iterator[dict[str, str]]:
    """Two configs (3 uplinks; 2 of them with other weights) and the state a clean apply leaves."""
    paths = {"A": lab.write(lab.config(probe=False), "a.toml"),
             "B": lab.write(lab.config(probe=False, weights=(2, 5)).split(
                 "[[uplink]]\nname = \"ISP3\"")[0] + '[[lan]]\nname = "LAN"\ninterface = "lan0"\n',
                 "b.toml")}
    yield paths
    lab.nmbalance("flush", "-c", paths["A"])


def reference(lab: Lab, paths: dict[str, str]) -> dict[str, str]:
    out = {}
    for name in ("A", "B", "A"):
        assert lab.nmbalance("apply", "-c", paths[name]).returncode == 0
        out[name] = our_state(lab)
    assert out["A"] != out["B"]
    return out


def routed(lab: Lab) -> None:
    tally = lab.connections(20, concurrency=20)
    assert sum(tally.values()) == 20 and 0 not in tally, tally


# Held 30 ms half-switched, so that some kills find the kernel so, however fast the
# apply (the whole window is ~6 ms here, and Python's start varies by as much).
HOLD = {"NMB_GATED_HOLD": "0.03"}


def held_daemon(lab: Lab, path: str) -> DaemonProcess:
    return DaemonProcess(lab, path, env=HOLD, module="labkit.held")


def gated_apply(lab: Lab, path: str, trace: bool = False) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), DBUS_SYSTEM_BUS_ADDRESS=lab.bus_address,
               **HOLD)
    if trace:
        env["NMB_GATED_TRACE"] = "1"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.rtr, sys.executable, "-m", "labkit.gated", "apply", "-c", path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if trace else subprocess.DEVNULL, text=True, env=env)
    lab.procs.append(proc)
    return proc


def go(proc: subprocess.Popen[str]) -> float:
    """Once it is at its start line, let it run; when that was."""
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return time.monotonic()


def test_kill_9_of_apply_at_random_points(lab: Lab, configs: dict[str, str]) -> None:
    ref = reference(lab, configs)
    windows = []
    for target in ("B", "A", "B", "A"):
        proc = gated_apply(lab, configs[target], trace=True)
        go(proc)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        windows.append([float(x) for x in err.split("window ")[1].split()[:2]])  # first..last change
    first = statistics.median(w[0] for w in windows)
    last = statistics.median(w[1] for w in windows)
    rng = random.Random(9)
    current, killed = "A", 0
    outcomes: list[str] = []
    # Started ahead, each waiting at its start line: the one to kill, the one to redo it.
    ahead = [gated_apply(lab, configs["B"]), gated_apply(lab, configs["B"])]
    for trial in range(TRIALS_APPLY):
        target = "B" if current == "A" else "A"
        victim, redo = ahead
        started = go(victim)
        time.sleep(max(rng.uniform(first, last) - (time.monotonic() - started), 0))
        victim.send_signal(signal.SIGKILL)
        killed += victim.wait(5) == -signal.SIGKILL
        if trial + 1 < TRIALS_APPLY:
            after_next = configs["B" if target == "A" else "A"]
            ahead = [gated_apply(lab, after_next), gated_apply(lab, after_next)]
        after = our_state(lab)
        outcomes.append("old" if after == ref[current] else "new" if after == ref[target]
                        else "partial")
        routed(lab)
        go(redo)
        assert redo.wait(10) == 0
        assert our_state(lab) == ref[target]
        for proc in (victim, redo):
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        current = target
    # The kills really fell inside the window: most before the end, some with the
    # kernel half-switched (~1 in 10 here).
    assert killed >= TRIALS_APPLY // 2 and "partial" in outcomes, (killed, first, last, outcomes)


def test_kill_9_of_the_daemon_at_random_points(lab: Lab, configs: dict[str, str]) -> None:
    ref = reference(lab, configs)
    path = lab.workdir / "nmbalance.toml"
    texts = {name: Path(p).read_text() for name, p in configs.items()}
    path.write_text(texts["A"])
    daemon = held_daemon(lab, str(path))
    daemon.wait_for("running:")

    def switch(daemon: DaemonProcess, target: str) -> float:
        path.write_text(texts[target])
        mark = daemon.mark()
        sent = time.monotonic()
        daemon.send(signal.SIGHUP)
        applied, _ = daemon.wait_for(r"applied .*after reload", after=mark)
        return applied - sent

    window = statistics.median([switch(daemon, t) for t in ("B", "A", "B", "A")])
    rng = random.Random(7)
    current, partial = "A", 0
    try:
        for _ in range(TRIALS_DAEMON):
            target = "B" if current == "A" else "A"
            path.write_text(texts[target])
            daemon.send(signal.SIGHUP)
            time.sleep(rng.uniform(0, window * 1.5))
            daemon.stop(signal.SIGKILL)
            partial += our_state(lab) not in (ref["A"], ref["B"])
            routed(lab)
            daemon = held_daemon(lab, str(path))
            daemon.wait_for("running:")
            assert our_state(lab) == ref[target], daemon.text()
            current = target
    finally:
        daemon.stop(signal.SIGKILL)
    assert partial >= 1, window
