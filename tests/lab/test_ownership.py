"""nmbalance changes only what it owns: foreign state survives, bad input changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from labkit.lab import Lab
from tests.bad_configs import BAD
from tests.lab.conftest import THREE_ISPS

WriteConfig = Callable[..., str]


def kernel_state(lab: Lab) -> str:
    """Everything a bad config must leave alone, as text."""
    parts = [lab.sh(lab.rtr, "nft", "list", "ruleset").stdout]
    for family in ("-4", "-6"):
        parts.append(lab.ip(lab.rtr, family, "rule", "show").stdout)
        parts.append(lab.ip(lab.rtr, family, "route", "show", "table", "all").stdout)
    return "\n".join(parts)


def test_foreign_table_rules_and_routes_are_byte_identical(
    router: Lab, write_config: WriteConfig
) -> None:
    router.add_foreign()
    try:
        before = router.foreign_state()
        config = write_config(THREE_ISPS.format(mode="weighted"))
        for args in (["apply", "-c", config], ["apply", "-c", config],
                     ["apply", "-c", config, "ISP1"], ["flush", "-c", config]):
            result = router.nmbalance(*args)
            assert result.returncode == 0, result.stderr
            assert router.foreign_state() == before, args
    finally:
        router.remove_foreign()


def test_bad_configs_exit_2_name_the_place_and_change_nothing(
    router: Lab, write_config: WriteConfig
) -> None:
    good = write_config(THREE_ISPS.format(mode="weighted"))
    assert router.nmbalance("apply", "-c", good).returncode == 0
    before = kernel_state(router)
    for case, name, text, expected in BAD:
        path = write_config(text, name=name)
        result = router.nmbalance("apply", "-c", path)
        assert result.returncode == 2, (case, result.stderr)
        for part in expected:
            assert part in result.stderr, (case, part, result.stderr)
        assert Path(path).name in result.stderr
        assert "Traceback" not in result.stderr
        assert kernel_state(router) == before, case
    # Bad usage is exit 2 too, and changes nothing either.
    result = router.nmbalance("apply", "-c", good, "ISP9")
    assert result.returncode == 2 and "ISP9" in result.stderr
    assert kernel_state(router) == before


def test_dry_run_prints_the_plan_and_changes_nothing(router: Lab, write_config: WriteConfig) -> None:
    before = kernel_state(router)
    result = router.nmbalance("apply", "--dry-run", "-c",
                              write_config(THREE_ISPS.format(mode="weighted")))
    assert result.returncode == 0, result.stderr
    assert "table inet nmbalance {" in result.stdout
    assert "0.0.0.0/0 via 10.102.0.1 dev wan2 table 7702" in result.stdout
    assert "7702: from all fwmark 0x200/0xff00 lookup 7702" in result.stdout
    assert kernel_state(router) == before


def test_flush_leaves_no_trace(router: Lab, write_config: WriteConfig) -> None:
    before = kernel_state(router)
    config = write_config(THREE_ISPS.format(mode="persistence"))
    assert router.nmbalance("apply", "-c", config).returncode == 0
    router.connections(50)
    assert kernel_state(router) != before
    result = router.nmbalance("flush", "-c", config)
    assert result.returncode == 0, result.stderr
    assert kernel_state(router) == before
    assert router.nmbalance("flush", "-c", config).returncode == 0  # idempotent


def test_status_reads_the_kernel(router: Lab, write_config: WriteConfig) -> None:
    import json

    config = write_config(THREE_ISPS.format(mode="weighted"))
    assert router.nmbalance("apply", "-c", config, "ISP1", "ISP2").returncode == 0
    status = json.loads(router.nmbalance("status", "--json", "-c", config).stdout)
    by_name = {u["name"]: u for u in status["uplinks"]}
    assert (by_name["ISP1"]["state"], by_name["ISP2"]["state"]) == ("active", "active")
    assert by_name["ISP3"]["state"] == "down", by_name["ISP3"]  # left out: the kernel can't say
    assert by_name["ISP2"]["share"] == pytest.approx(0.75)
    assert by_name["ISP2"]["gateway"] == "10.102.0.1"
    text = router.nmbalance("status", "-c", config).stdout
    assert re.search(r"^ISP3\s+down", text, re.M), text
