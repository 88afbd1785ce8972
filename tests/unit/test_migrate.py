"""Carrying a Net-ISP-Balance installation over: its balance/ scripts, what
`convert` makes of each line, and the small router pieces beside it
(resolver, sysctls, uplink names on the command line)."""

from __future__ import annotations

import asyncio
import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from nmbalance.cli import main
from nmbalance.config.load import load_text
from nmbalance.config.migrate import iptables_to_nft, migrate
from nmbalance.dataplane.sysctl import Sysctls
from nmbalance.errors import UsageError
from nmbalance.oneshot import _selection
from nmbalance.sources.resolver import MIN_TTL, RETRY, ProbeResolver, ResolveError

CONF = "CABLE eth0 isp 198.51.100.1\nDSL ppp0 isp 198.51.100.1\nLAN eth1 lan\n"


def _installation(tmp_path: Path) -> Path:
    conf = tmp_path / "balance.conf"
    conf.write_text(CONF)
    files = {
        "firewall/01.accept": "# comment\niptables -A INPUT -p udp --source-port domain -j ACCEPT\n"
                              "iptables -A INPUT -i eth0 -p tcp --dport 443 -j ACCEPT\n"
                              "iptables -t nat -A PREROUTING -p tcp --dport 25 -j REDIRECT\n",
        "firewall/02.forward.pl": "$B->forward(23=>'10.0.0.35:22');\n"
                                  "$B->forward_with_snat(80 => '10.0.0.40', 'tcp', 'udp');\n"
                                  "$B->iptables([\"-A FORWARD -p udp --source-port ntp -d $_ -j ACCEPT\"]\n"
                                  "  ) foreach map {$B->net($_)} $B->lan_services;\n",
        "routes/01.local_routes": "ip route add 192.168.100.1 dev eth0\n"
                                  "ip route add 10.9.0.0/16 dev eth1 src 10.0.0.1\n",
        "routes/02.local_routes.pl": "$B->add_route('192.168.2.0/24'=>'eth1');\n",
        "pre-run/10-modem": "#!/bin/sh\nmodem-reset\n",
        "post-run/post-run-script.pl": "#!/bin/sh\n# nothing\n",
    }
    for name, text in files.items():
        path = tmp_path / "balance" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return conf


def test_each_line_is_carried_over_or_listed(tmp_path: Path) -> None:
    conf = _installation(tmp_path)
    config = load_text(CONF, str(conf)).config
    moved = migrate(tmp_path / "balance", config)
    assert moved.port_forwards == [
        {"proto": "tcp", "port": 23, "to": "10.0.0.35", "to_port": 22},
        {"proto": "tcp", "port": 80, "to": "10.0.0.40", "hairpin": True},
        {"proto": "udp", "port": 80, "to": "10.0.0.40", "hairpin": True},
    ]
    assert moved.routes == [{"to": "192.168.100.1/32", "interface": "eth0"},
                            {"to": "192.168.2.0/24", "interface": "eth1"}]
    assert moved.nft == ['add rule inet nmbalance input iifname "eth0" tcp dport 443 accept']
    report = "\n".join(moved.report)
    assert "01.accept:2: not needed" in report
    assert "01.accept:4: NOT carried over" in report and "REDIRECT" in report
    assert "02.forward.pl:3: not needed" in report  # a statement over two lines
    assert "01.local_routes:2: NOT carried over" in report  # `src` would be lost
    assert "hooks.d/pre-apply/10-modem" in report
    assert "post-run-script.pl: nothing to carry over" in report


def test_convert_writes_toml_that_loads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    conf = _installation(tmp_path)
    snippet = tmp_path / "fw.nft"
    assert main(["convert", str(conf), "--snippet", str(snippet)]) == 0
    out = capsys.readouterr()
    config = load_text(out.out, "converted.toml").config
    assert config.firewall.restrictive and not config.firewall.allow_ssh
    assert "restrictive = true" in out.out and "allow_ssh = false" in out.out
    assert len(config.port_forward) == 3 and len(config.route) == 2
    assert "tcp dport 443 accept" in snippet.read_text()
    assert "NOT carried over" in out.err


@pytest.mark.parametrize(("line", "rule"), [
    ("iptables -A INPUT -p tcp --dport ssh -j ACCEPT", "add rule inet t input tcp dport 22 accept"),
    ("iptables -I FORWARD -i eth0 -o eth1 -s 10.0.0.0/8 -d 192.0.2.1 -p udp --sport 53 -j DROP",
     'insert rule inet t forward iifname "eth0" oifname "eth1" ip saddr 10.0.0.0/8 '
     "ip daddr 192.0.2.1/32 udp sport 53 drop"),
    ("iptables -A INPUT -p tcp --syn --dport 80 -j REJECT",
     "add rule inet t input tcp flags syn / fin,syn,rst,ack tcp dport 80 reject"),
    ("iptables -A INPUT -p icmp -j ACCEPT", "add rule inet t input meta l4proto icmp accept"),
    ("iptables -A OUTPUT -j ACCEPT", None),  # no such chain of ours
    ("iptables -A INPUT -m state --state NEW -j ACCEPT", None),  # a match not translated
    ("iptables -A INPUT -i 'eth0; rm -rf /' -j ACCEPT", None),  # never into nft text
    ("iptables -A INPUT -p tcp --dport 80", None),  # no verdict
])
def test_iptables_translations_are_exact_or_refused(line: str, rule: str | None) -> None:
    assert iptables_to_nft(line, "t") == rule


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_resolver_caches_retries_and_keeps_the_last_answer() -> None:
    now = [0.0]
    answers: list[object] = [([IPv4Address("192.0.2.7")], 5.0)]
    asked: list[tuple[str, IPv4Address, IPv4Address]] = []

    async def query(name: str, server: IPv4Address, source: IPv4Address, mark: int,
                    timeout: float) -> tuple[list[IPv4Address], float]:
        asked.append((name, server, source))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    resolver = ProbeResolver(query, clock=lambda: now[0], fallback=lambda: [])
    dns, src = IPv4Address("10.0.0.53"), IPv4Address("10.0.0.2")
    got = _run(resolver.resolve("A", "ping.example.net", [dns], src))
    assert got == (IPv4Address("192.0.2.7"),) and asked == [("ping.example.net", dns, src)]
    now[0] = MIN_TTL - 1  # a TTL of 5 s is held for MIN_TTL
    _run(resolver.resolve("A", "ping.example.net", [dns], src))
    assert len(asked) == 1
    now[0] = MIN_TTL + 1
    answers.append(ResolveError("no answer from 10.0.0.53"))
    assert _run(resolver.resolve("A", "ping.example.net", [dns], src)) == got  # stale kept
    assert resolver.shown("A") == {"ping.example.net": "192.0.2.7"}
    now[0] += RETRY
    answers.append(([IPv4Address("192.0.2.8")], 600.0))
    resolver.lost("A", "ping.example.net")
    assert _run(resolver.resolve("A", "ping.example.net", [dns], src)) == (IPv4Address("192.0.2.8"),)
    resolver.lost("A", "ping.example.net")  # a lost probe asks again after RETRY, not at once
    assert len(asked) == 3
    with pytest.raises(ResolveError, match="no DNS server known"):
        _run(resolver.resolve("B", "ping.example.net", [], src))


def test_forwarding_is_turned_on_and_put_back(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "conf" / "all").mkdir(parents=True)
    (proc / "conf" / "wan2").mkdir(parents=True)
    (proc / "ip_forward").write_text("0\n")
    sysctls = Sysctls(proc, tmp_path / "run")
    assert sysctls.enable_forwarding() and (proc / "ip_forward").read_text() == "1\n"
    assert not sysctls.enable_forwarding()
    assert sysctls.restore_forwarding() == 0 and (proc / "ip_forward").read_text() == "0\n"
    assert sysctls.restore_forwarding() is None  # nothing of ours to put back
    (proc / "ip_forward").write_text("1\n")
    assert not sysctls.enable_forwarding() and sysctls.restore_forwarding() is None
    (proc / "conf" / "all" / "rp_filter").write_text("0\n")
    (proc / "conf" / "all" / "src_valid_mark").write_text("0\n")
    (proc / "conf" / "wan2" / "rp_filter").write_text("1\n")
    warnings = sysctls.reverse_path_warnings(["wan1", "wan2"])
    assert len(warnings) == 1 and warnings[0].startswith("wan2:")
    (proc / "conf" / "all" / "src_valid_mark").write_text("1\n")
    assert sysctls.reverse_path_warnings(["wan2"]) == []
    assert os.listdir(tmp_path / "run") == []


def test_uplink_names_match_whatever_the_case_when_unambiguous() -> None:
    config = load_text("CABLE eth0 isp 198.51.100.1\nDsl eth1 isp 198.51.100.1\n"
                       "dsl eth2 isp 198.51.100.1\n", "b.conf").config
    assert _selection(config, ["cable"]) == frozenset({"CABLE"})
    assert _selection(config, ["Dsl"]) == frozenset({"Dsl"})  # an exact match first
    with pytest.raises(UsageError, match="ambiguous uplink DSL"):
        _selection(config, ["DSL"])
    with pytest.raises(UsageError, match="unknown uplink fibre"):
        _selection(config, ["fibre"])


def test_a_line_the_config_cannot_hold_is_listed_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "balance" / "routes").mkdir(parents=True)
    (tmp_path / "balance" / "routes" / "01").write_text(
        "ip route add 10.0.0.300 dev eth0\n$B->add_route('10.1.0.0/16' => 'a-very-long-ifname0');\n")
    config = load_text(CONF, "b.conf").config
    moved = migrate(tmp_path / "balance", config)
    assert moved.routes == [] and len(moved.report) == 2
    assert all("NOT carried over" in line for line in moved.report)


def test_default_config_falls_back_to_net_isp_balance_paths() -> None:
    from nmbalance.config.load import DEFAULT_PATH, default_path

    assert default_path(lambda p: True) == DEFAULT_PATH
    assert default_path(lambda p: str(p) == "/etc/network/balance.conf") == \
        "/etc/network/balance.conf"
    assert default_path(lambda p: str(p).startswith("/etc/sysconfig")) == \
        "/etc/sysconfig/network-scripts/balance.conf"
    assert default_path(lambda p: False) == DEFAULT_PATH
