"""Smaller defects from the hardening review, each pinned by a test."""

from __future__ import annotations

import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from nmbalance.config import load_config_text
from nmbalance.core.decide import decide
from nmbalance.core.facts import Health
from nmbalance.core.health_machine import Lost, Reply, loss_percent
from nmbalance.core.health_monitor import HealthMonitor
from nmbalance.dataplane.apply import restore_sticky
from nmbalance.dataplane.nft import StickyEntry, TableState
from nmbalance.errors import ConfigError
from nmbalance.publish.hooks import HookRunner
from nmbalance.trusted import untrusted_file, untrusted_folder
from tests.unit.test_decide import CONFIG, config, facts, uplink


def test_a_dead_uplinks_dns_server_is_not_pinned_to_it() -> None:
    plan = decide(config(), facts(uplink(1), uplink(2, health=Health.DOWN), uplink(3)))
    assert plan.nft.contents.dns4 == {}  # ISP2 has the only DNS server, and is down
    assert decide(config(), facts()).nft.contents.dns4 == {"198.51.100.53": "ISP2"}


def test_bound_sockets_follow_the_addresses_of_all_but_the_main_default_uplink() -> None:
    from dataclasses import replace
    plan = decide(config(), replace(facts(), main_default="wan1"))
    assert plan.nft.contents.source4 == {"10.102.0.2": "ISP2", "10.103.0.2": "ISP3"}


def test_sticky_entries_put_back_respect_a_lowered_timeout() -> None:
    text = CONFIG.replace('method = "persistence"', 'method = "persistence"\npersistence_timeout = 60')
    plan = decide(config(text), facts())
    before = TableState(digest="x", sticky={"st_Rbank__ISP1": [StickyEntry("10.250.0.9", 500)]})
    assert "10.250.0.9 expires 60s" in restore_sticky(before, plan)


def test_dbus_loss_is_the_figure_health_judges_by() -> None:
    c = load_config_text('[[uplink]]\nname = "A"\ninterface = "wan1"\nprobe = ["192.0.2.1"]\n',
                         "t.toml")
    monitor = HealthMonitor(c)
    monitor.observe("A", Reply(5.0), 0.0)
    monitor.observe("A", Lost("x"), 1.0)
    # 1 of 2 probes lost, counted against the 20-probe window as health does.
    assert monitor.loss("A") == loss_percent(monitor.policies["A"], monitor.trackers["A"]) == 5.0


def test_trusted_means_owned_locked_and_inside(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir(mode=0o755)
    good = folder / "a.nft"
    good.write_text("x")
    good.chmod(0o644)
    assert untrusted_folder(folder) is None and untrusted_file(good, folder) is None
    good.chmod(0o664)
    assert "writable only" in (untrusted_file(good, folder) or "")
    good.chmod(0o644)
    outside = tmp_path / "outside.nft"
    outside.write_text("x")
    (folder / "link.nft").symlink_to(outside)
    assert "leads out of" in (untrusted_file(folder / "link.nft", folder) or "")
    (folder / "inside.nft").symlink_to(good)
    assert untrusted_file(folder / "inside.nft", folder) is None
    folder.chmod(0o777)
    assert "writable only" in (untrusted_folder(folder) or "")


def test_untrusted_snippets_are_a_config_error(tmp_path: Path) -> None:
    from nmbalance.config.snippets import read_snippets

    folder = tmp_path / "nft.d"
    folder.mkdir(mode=0o755)
    bad = folder / "10-open.nft"
    bad.write_text("add rule inet nmbalance postrouting accept\n")
    bad.chmod(0o666)
    c = load_config_text(f'snippets_dir = "{folder}"\n[[uplink]]\nname = "A"\n'
                         'interface = "wan1"\n', "t.toml")
    with pytest.raises(ConfigError, match=r"10-open\.nft: snippet not used"):
        read_snippets(c)
    bad.chmod(0o644)
    assert read_snippets(c) == ((str(bad), "add rule inet nmbalance postrouting accept\n"),)


def test_hooks_in_a_folder_others_may_write_are_not_run(tmp_path: Path) -> None:
    folder = tmp_path / "hooks"
    (folder / "down").mkdir(parents=True)
    hook = folder / "down" / "10-x"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    assert HookRunner(str(folder), 1).scripts("down") == [hook]
    (folder / "down").chmod(0o777)
    assert HookRunner(str(folder), 1).scripts("down") == []
    (folder / "down").chmod(0o755)
    outside = tmp_path / "evil"
    outside.write_text("#!/bin/sh\n")
    outside.chmod(0o755)
    (folder / "down" / "20-link").symlink_to(outside)
    assert HookRunner(str(folder), 1).scripts("down") == [hook]


@pytest.mark.skipif(os.geteuid() != 0, reason="owner checks need files of another user")
def test_a_hook_owned_by_another_user_is_not_run(tmp_path: Path) -> None:
    folder = tmp_path / "hooks" / "up"
    folder.mkdir(parents=True)
    hook = folder / "10-x"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    os.chown(hook, 65534, 65534)
    assert HookRunner(str(tmp_path / "hooks"), 1).scripts("up") == []


def test_parsed_addresses_never_keep_a_scope_id() -> None:
    from nmbalance.config.values import usable_address
    from nmbalance.sources import validate

    for text in ("fe80::1%x }\nflush ruleset", "10.0.0.1%eth0", "::", "0.0.0.0", "127.0.0.1",
                 "224.0.0.1", "255.255.255.255", "ff02::1"):
        with pytest.raises(ValueError):
            usable_address(text)
        assert validate.address(text) is None
    assert validate.address([10, 0, 0, 1]) == IPv4Address("10.0.0.1")
    assert validate.address([True, 0, 0, 1]) is None
    assert validate.ifname("eth0\n") is None and validate.ifname("eth0") == "eth0"
