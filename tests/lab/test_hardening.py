"""Input hardening against the real kernel: IPv6 left alone, snippets that nft
refuses named by file and line with nothing changed, another program's table
under our name refused, identifiers that cannot collide, a socket bound to an
uplink's address kept on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labkit.daemon import DaemonProcess
from labkit.lab import ROOT, Lab, isp_router_addr
from tests.lab.conftest import THREE_ISPS
from tests.lab.test_ownership import kernel_state

WriteConfig = Callable[..., str]
CHI2_1PCT_2DF = 9.210


@pytest.fixture
def snippets(lab: Lab) -> Iterator[Path]:
    folder = lab.workdir / "nft.d"
    folder.mkdir(mode=0o755, exist_ok=True)
    folder.chmod(0o755)
    yield folder
    for path in folder.iterdir():
        path.unlink()


def snippet(folder: Path, name: str, text: str, mode: int = 0o644) -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(mode)
    return path


def with_snippets(folder: Path) -> str:
    return THREE_ISPS.format(mode="weighted").replace('snippets_dir = ""',
                                                      f'snippets_dir = "{folder}"')


def test_a_snippet_nft_refuses_is_named_and_nothing_changes(
        router: Lab, write_config: WriteConfig, snippets: Path) -> None:
    snippet(snippets, "10-ok.nft", "add rule inet nmbalance postrouting counter\n")
    config = write_config(with_snippets(snippets))
    assert router.nmbalance("apply", "-c", config).returncode == 0
    assert "counter" in router.sh(router.rtr, "nft", "list", "chain", "inet", "nmbalance",
                                  "postrouting").stdout
    before = kernel_state(router)
    # A change that touches routing too: ISP3 leaves the config.
    bad = snippet(snippets, "20-bad.nft", "add rule inet nmbalance postrouting counter\n"
                                          "add rule inet nmbalance nosuchchain accept\n")
    config = write_config(with_snippets(snippets).split('[[uplink]]\nname = "ISP3"')[0]
                          + '[[lan]]\nname = "LAN"\ninterface = "lan0"\n')
    result = router.nmbalance("apply", "-c", config)
    assert result.returncode == 1, result.stderr
    assert f"snippet {bad} refused" in result.stderr and f"{bad}:2:" in result.stderr
    assert "Traceback" not in result.stderr
    assert kernel_state(router) == before  # routes, rules and table as they were


def test_untrusted_snippets_are_refused(router: Lab, write_config: WriteConfig,
                                        snippets: Path) -> None:
    config = write_config(with_snippets(snippets))
    before = kernel_state(router)
    writable = snippet(snippets, "10-open.nft", "add rule inet nmbalance postrouting accept\n",
                       mode=0o666)
    result = router.nmbalance("apply", "-c", config)
    assert result.returncode == 2 and f"{writable}: snippet not used" in result.stderr
    writable.unlink()
    outside = router.workdir / "elsewhere.nft"
    outside.write_text("add rule inet nmbalance postrouting accept\n")
    (snippets / "20-link.nft").symlink_to(outside)
    result = router.nmbalance("apply", "-c", config)
    assert result.returncode == 2 and "leads out of" in result.stderr
    assert kernel_state(router) == before


def test_a_table_of_our_name_that_we_did_not_make_is_left_alone(
        router: Lab, write_config: WriteConfig) -> None:
    router.sh(router.rtr, "nft", "add table inet nmbalance; add chain inet nmbalance mine")
    try:
        before = router.sh(router.rtr, "nft", "list", "ruleset").stdout
        config = write_config(THREE_ISPS.format(mode="weighted"))
        for command in ("apply", "flush"):
            result = router.nmbalance(command, "-c", config)
            assert result.returncode == 1 and "nmbalance did not make it" in result.stderr
            assert router.sh(router.rtr, "nft", "list", "ruleset").stdout == before
    finally:
        router.sh(router.rtr, "nft", "delete table inet nmbalance", check=False)


def test_a_renamed_table_replaces_the_old_one(router: Lab, write_config: WriteConfig) -> None:
    first = write_config(THREE_ISPS.format(mode="weighted"))
    assert router.nmbalance("apply", "-c", first).returncode == 0
    renamed = write_config(THREE_ISPS.format(mode="weighted") + '[kernel]\ntable = "nmbalance_b"\n',
                           name="b.toml")
    assert router.nmbalance("apply", "-c", renamed).returncode == 0
    tables = router.sh(router.rtr, "nft", "list", "tables").stdout.split()
    assert "nmbalance_b" in tables and "nmbalance" not in tables
    assert router.nmbalance("flush", "-c", renamed).returncode == 0


def test_names_that_once_collided_get_their_own_uplinks(
        router: Lab, write_config: WriteConfig) -> None:
    text = THREE_ISPS.format(mode="weighted")
    for old, new in (('"ISP1"', '"u2_a_b"'), ('"ISP2"', '"a_b"'), ('"ISP3"', '"a.b"'),
                     ("weight = 3", "weight = 1"), ("weight = 2", "weight = 1")):
        text = text.replace(old, new)
    assert router.nmbalance("apply", "-c", write_config(text)).returncode == 0
    tally = router.connections(600)
    assert sum(tally.values()) == 600
    chi2 = sum((tally.get(n, 0) - 200) ** 2 / 200 for n in (1, 2, 3))
    assert chi2 < CHI2_1PCT_2DF, tally


def test_a_socket_bound_to_an_uplinks_address_stays_on_it(
        router: Lab, write_config: WriteConfig) -> None:
    assert router.nmbalance("apply", "-c",
                            write_config(THREE_ISPS.format(mode="weighted"))).returncode == 0
    # The main table's default is via ISP1 (metric 101): bound to ISP2's or ISP3's address,
    # a socket keeps its choice; unbound, host traffic is balanced.
    for n in (2, 3):
        assert router.connections(60, ns=router.rtr, bind=isp_router_addr(n)) == {n: 60}
    tally = router.connections(300, ns=router.rtr)
    assert all(tally.get(n, 0) > 0 for n in (1, 2, 3)), tally


@pytest.fixture
def ipv6(lab: Lab) -> Iterator[str]:
    """IPv6 for the LAN, routed by the system via ISP2 (kept for the rest of the module)."""
    if not hasattr(lab, "ipv6_server"):
        lab.ipv6_server = lab.add_ipv6(via=2)  # type: ignore[attr-defined]
    yield lab.ipv6_server  # type: ignore[attr-defined]


def conntrack6(lab: Lab, port: int) -> str:
    return lab.sh(lab.rtr, "conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--sport",
                  str(port), check=False).stdout


def test_ipv6_is_left_as_the_system_routes_it(lab: Lab, ipv6: str) -> None:
    daemon = DaemonProcess(lab, lab.write(lab.config(health={"interval_ms": 200})))
    try:
        daemon.wait_for("running:")
        # No NAT66: the server sees the LAN host's own address.
        assert lab.sources(20, server=ipv6) == {"2001:db8:250::2": 20}
        stream, port = lab.start_stream(4, server=ipv6)
        entry = conntrack6(lab, port)
        assert entry and "mark=0 " in entry, entry  # no uplink mark: routed as the system does
        # Both other uplinks fail; their conntrack entries go, the IPv6 flow's stays.
        mark = daemon.mark()
        lab.carrier(1, False)
        lab.carrier(3, False)
        daemon.wait_for(r"applied .*ISP1 down.*ISP3 down", after=mark)
        assert stream.stdout is not None
        result = json.loads(stream.stdout.readline())
        assert result["received"] == result["sent"] > 300, result
    finally:
        lab.carrier(1, True)
        lab.carrier(3, True)
        daemon.stop(signal.SIGTERM)
        lab.nmbalance("flush", "-c", lab.write(lab.config(), "flush.toml"))


def test_the_shipped_example_config_is_applied_by_the_kernel(router: Lab) -> None:
    """What `check` accepts, nft takes (dry run in the router's namespace)."""
    for example in (ROOT / "examples" / "nmbalance.toml",
                    ROOT / "nmbalance" / "config" / "default.toml"):
        code = ("import sys\nfrom nmbalance.config import load_config\n"
                "from nmbalance.core.decide import decide\nfrom nmbalance.core.facts import Facts\n"
                "from nmbalance.dataplane.nft import NftTable\n"
                f"c = load_config({str(example)!r})\np = decide(c, Facts())\n"
                "err = NftTable(c.kernel.table).check(p.nft.full_transaction())\n"
                "print(err or 'ok')\n")
        out = subprocess.run(["ip", "netns", "exec", router.rtr, sys.executable, "-c", code],
                             capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert out.stdout.strip() == "ok", out.stdout + out.stderr


def test_nothing_the_fuzzer_gets_accepted_is_refused_by_nft(router: Lab) -> None:
    """Configs the unit tier's mutations produce and the loader accepts: their
    whole transaction passes libnftables' dry run in a real namespace."""
    from hypothesis import HealthCheck, given, settings

    from nmbalance.config import load_config_text
    from nmbalance.core.decide import decide
    from nmbalance.errors import ConfigError, ConfigErrors
    from tests.unit.test_fuzz_config import LEGACY_SEED, TOML_SEED, facts_for, mutated

    checker = subprocess.Popen(
        ["ip", "netns", "exec", router.rtr, sys.executable, "-m", "labkit.nftcheck"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    router.procs.append(checker)
    assert checker.stdin is not None and checker.stdout is not None
    accepted = []

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutated(TOML_SEED, steps=1) | mutated(LEGACY_SEED, steps=1))
    def each(text: str) -> None:
        try:
            config = load_config_text(text, "fuzz.toml")
        except (ConfigError, ConfigErrors):
            return
        transaction = decide(config, facts_for(config)).nft.full_transaction()
        checker.stdin.write(json.dumps(transaction) + "\n")  # type: ignore[union-attr]
        checker.stdin.flush()  # type: ignore[union-attr]
        answer = json.loads(checker.stdout.readline())  # type: ignore[union-attr]
        assert answer is None, (text, answer)
        accepted.append(text)

    each()
    checker.stdin.close()
    checker.wait(10)
    assert len(accepted) >= 20  # enough of them were accepted to mean something
