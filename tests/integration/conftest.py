"""Integration tests: the real NetworkManager, systemd-networkd and
dbus-daemon, inside lab namespaces with a private bus and mount view."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    needs = {"NetworkManager": "NetworkManager", "dbus-daemon": "dbus-daemon",
             "dnsmasq": "dnsmasq", "nft": "nft"}
    missing = [name for name, program in needs.items() if not shutil.which(program)]
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0 or missing:
                item.add_marker(pytest.mark.skip(
                    reason=f"integration tests need root and {', '.join(missing) or 'root'}"))
