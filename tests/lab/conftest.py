"""Lab fixtures: real namespaces, real kernel datapath; cleaned up even on failure."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import Lab

pytestmark = pytest.mark.lab


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab" in str(item.fspath):
            item.add_marker(pytest.mark.lab)
            if os.geteuid() != 0 or not shutil.which("nft"):
                item.add_marker(pytest.mark.skip(reason="lab tests need root and nft"))


THREE_ISPS = """\
mode = "{mode}"
snippets_dir = ""
[[uplink]]
name = "ISP1"
interface = "wan1"
weight = 1
[[uplink]]
name = "ISP2"
interface = "wan2"
weight = 3
[[uplink]]
name = "ISP3"
interface = "wan3"
weight = 2
[[lan]]
name = "LAN"
interface = "lan0"
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(isps=3) as built:
        yield built


@pytest.fixture
def router(lab: Lab) -> Iterator[Lab]:
    """The module's lab, with nmbalance flushed after each test."""
    yield lab
    lab.nmbalance("flush", "-c", str(lab.workdir / "flush.toml"))
    for n in range(1, lab.isps + 1):
        lab.carrier(n, True)
    lab.sh(lab.rtr, "conntrack", "-F", check=False)


@pytest.fixture
def write_config(lab: Lab) -> Iterator[object]:
    (lab.workdir / "flush.toml").write_text(THREE_ISPS.format(mode="weighted"))

    def write(text: str, name: str = "nmbalance.toml") -> str:
        path = Path(lab.workdir) / name
        path.write_text(text)
        return str(path)

    yield write


INTERVAL = 0.2
FAST = {"interval_ms": 200, "min_successive_pkts_rcvd": 5, "hold_time": 1}

Start = Callable[..., DaemonProcess]


# `lab`: the module's three-ISP lab from conftest.py.
@pytest.fixture
def start(lab: Lab) -> Iterator[Start]:
    """Start daemons; afterwards stop them, flush, and heal every ISP."""
    started: list[DaemonProcess] = []

    def start_daemon(health: dict[str, object] | None = None, extra: str = "", top: str = "",
                     env: dict[str, str] | None = None, wait: bool = True,
                     text: str | None = None) -> DaemonProcess:
        """`text`: a whole config instead of the lab's own with these additions."""
        path = lab.write(text if text is not None else
                         lab.config(health=FAST | (health or {}), extra=extra, top=top))
        daemon = DaemonProcess(lab, path, env=env)
        started.append(daemon)
        if wait:
            daemon.wait_for("running:")
        return daemon

    yield start_daemon
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.stop(signal.SIGKILL)
    lab.nmbalance("flush", "-c", lab.write(lab.config(), "flush.toml"))
    for n in range(1, lab.isps + 1):
        lab.carrier(n, True)
        lab.blackhole(n, False)
        lab.block_probes(n, False)
    lab.sh(lab.rtr, "conntrack", "-F", check=False)
