"""Lab fixtures: real namespaces, real kernel datapath; cleaned up even on failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

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
