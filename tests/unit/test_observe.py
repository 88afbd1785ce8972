"""The pure parts of looking in (issue 13): rule conditions, explain, the
status schema, the counters behind the measured share, the metrics text, the
status table and watch lines, doctor's verdicts, and the command line."""

from __future__ import annotations

import argparse
import io
import re
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from nmbalance import cli
from nmbalance.config import load_config_text
from nmbalance.config.model import KernelSettings
from nmbalance.core.decide import decide
from nmbalance.core.explain import explain
from nmbalance.core.facts import Health
from nmbalance.core.matching import Connection, conditions, first_unmet
from nmbalance.daemon.stats import NewConnections
from nmbalance.publish.metrics import MetricsView, openmetrics
from nmbalance.report.doctor import FAIL, PASS, _networkd, networkd_settings
from nmbalance.report.render import change_lines, render
from nmbalance.report.status import from_daemon, schema
from nmbalance.report.watch import sparkline, watch
from nmbalance.sources.counters import LinkStats
from tests.unit.test_decide import CONFIG, facts, uplink

SERVER = IPv4Address("198.51.100.10")


def plan_of(text: str = CONFIG, *ups: Any) -> Any:
    config = load_config_text(text, "test.toml")
    return config, decide(config, facts(*ups))


def test_conditions_render_and_match_alike() -> None:
    config, _ = plan_of()
    bank = config.rule[0]
    assert [c.nft() for c in conditions(bank)] == [
        "ip daddr { 203.0.113.0/24 }", "meta l4proto tcp", "th dport { 443, 8000-8080 }"]
    hit = Connection(IPv4Address("203.0.113.7"), IPv4Address("10.250.0.9"), "tcp", 5000, 8080)
    assert first_unmet(bank, hit) is None
    for miss, unmet in (
            (Connection(SERVER, None, "tcp", None, 443), "dst 203.0.113.0/24"),
            (Connection(IPv4Address("203.0.113.7"), None, "udp", None, 443), "proto tcp"),
            (Connection(IPv4Address("203.0.113.7"), None, "tcp", None, 8081), "dport 443 8000-8080"),
            (Connection(IPv4Address("203.0.113.7"), None, "tcp"), "dport 443 8000-8080")):
        found = first_unmet(bank, miss)
        assert found is not None and found.describe() == unmet


def test_explain_follows_the_table_order() -> None:
    config, plan = plan_of()
    # The first rule that matches decides: persistence over ISP1 and ISP2.
    bank = explain(config, plan, Connection(IPv4Address("203.0.113.7"), None, "tcp", None, 443))
    assert bank.rule == "bank" and bank.method == "persistence"
    assert bank.distribution == pytest.approx({"ISP2": 0.75, "ISP1": 0.25}, abs=0.001)
    assert "ISP3" not in bank.excluded  # not a member of the rule at all
    voip = explain(config, plan, Connection(SERVER, IPv4Address("10.250.0.50")))
    assert voip.uplink == "ISP3" and "rule bank: no (dst 203.0.113.0/24" in voip.steps[0]
    default = explain(config, plan, Connection(SERVER, IPv4Address("10.250.0.9"), "udp", None, 53))
    assert default.rule is None and default.weights_from == "plan"
    assert default.distribution == pytest.approx({"ISP1": 1 / 6, "ISP2": 0.5, "ISP3": 1 / 3},
                                                 abs=0.001)
    assert "=> one of: ISP2 50.0%" in default.describe()
    # Never balanced, DNS of an uplink, arriving on an uplink, this machine's own.
    lan = explain(config, plan, Connection(IPv4Address("10.250.0.7")))
    assert not lan.balanced and lan.uplink is None and "10.250.0.0/24" in lan.steps[0]
    dns = explain(config, plan, Connection(IPv4Address("198.51.100.53"), None, "udp", None, 53))
    assert dns.uplink == "ISP2"
    inbound = explain(config, plan, Connection(SERVER, iif="wan3"))
    assert inbound.uplink == "ISP3" and "from outside" in inbound.steps[0]
    local = explain(config, plan, Connection(IPv4Address("10.101.0.2")))
    assert not local.balanced and "own address" in local.steps[0]


def test_explain_with_what_the_kernel_and_daemon_say() -> None:
    config, plan = plan_of()
    voip_down = explain(config, plan, Connection(SERVER, IPv4Address("10.250.0.50")),
                        states={"ISP3": ("down", "3 probes lost in a row")})
    assert voip_down.uplink is None
    assert voip_down.excluded == {"ISP3": "down: 3 probes lost in a row"}
    # The kernel's weight map (the daemon's measured choice) wins over the plan's.
    kernel = {"w_default": [(0, 999, "up_ISP3")], "w_Rbank": [(0, 999, "learn_Rbank__ISP1")]}
    chosen = explain(config, plan, Connection(SERVER), weights=kernel)
    assert chosen.uplink == "ISP3" and chosen.weights_from == "kernel"
    assert set(chosen.excluded) == {"ISP1", "ISP2"}
    pinned = explain(config, plan, Connection(IPv4Address("203.0.113.7"), IPv4Address("10.250.0.9"),
                                              "tcp", None, 443),
                     pinned=lambda name, key: (name, key) == ("st_Rbank__ISP2", "10.250.0.9"))
    assert pinned.uplink == "ISP2" and "seen recently on ISP2" in pinned.steps[-1]
    # A rule whose uplinks are all down falls back to the global mode.
    _, plan = plan_of(CONFIG, uplink(1, health=Health.DOWN), uplink(2, carrier=False), uplink(3))
    fallback = explain(config, plan, Connection(IPv4Address("203.0.113.7"), None, "tcp", None, 443))
    assert fallback.uplink == "ISP3" and any("the global mode decides" in s for s in fallback.steps)


BUS_UPLINK = {"Name": "ISP1", "State": "degraded", "Health": "degraded", "Reason": "slow",
              "Enabled": True, "Interface": "wan1", "Connection": "", "Gateway": "10.101.0.1",
              "GatewaySource": "kernel", "Address": "10.101.0.2", "Weight": 1.0, "Share": 0.25,
              "MeasuredShare": -1.0, "NewConnections": 12, "Mark": 256, "Table": 7701,
              "LatencyMs": 12.5, "LossPercent": 0.0, "Probing": ["198.51.100.1"],
              "LoadDownMbps": -1.0, "LoadUpMbps": -1.0}


def test_the_daemons_answer_fits_the_schema() -> None:
    doc = from_daemon({"manager": {"Mode": "weighted", "Summary": "x", "Following": ["networkd"],
                                   "Choices": []},
                       "uplinks": [BUS_UPLINK, dict(BUS_UPLINK, Name="ISP2", State="")]},
                      KernelSettings(), {"routes": [], "rules": []})
    jsonschema.validate(doc, schema())
    first, second = doc["uplinks"]
    assert first["measured_share"] is None and first["connection"] is None
    assert first["state"] == "degraded" and first["latency_ms"] == 12.5
    assert second["state"] == "down" and second["reason"] == "not applied yet"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(doc, version=2), schema())


def test_new_connections_survive_a_counter_reset_and_share_the_last_minute() -> None:
    counted = NewConnections()
    counted.sample(0.0, {"A": 10, "B": 0})
    counted.sample(2.0, {"A": 30, "B": 20})
    counted.sample(4.0, {"A": 5, "B": 25})  # the whole table was replaced: A restarted
    assert counted.totals == {"A": 35, "B": 25}
    assert counted.shares() == pytest.approx({"A": 25 / 50, "B": 25 / 50})
    for t in range(6, 130, 2):
        counted.sample(float(t), {"A": 5, "B": 25 + t})  # only B takes new ones now
    assert counted.shares() == pytest.approx({"A": 0.0, "B": 1.0})


def test_metrics_are_valid_openmetrics_with_the_published_values() -> None:
    view = MetricsView(uplinks={"ISP1": BUS_UPLINK}, links={"wan1": LinkStats(100, 2, 300, 4)},
                       state_changes={"ISP1": 3}, probe_rounds={"ISP1": 40}, applies=5,
                       apply_seconds=0.02, repairs=1)
    text = openmetrics(view)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    one = (("uplink", "ISP1"),)
    assert samples[("nmbalance_uplink_state", (("nmbalance_uplink_state", "degraded"),
                                               ("uplink", "ISP1")))] == 1
    assert samples[("nmbalance_uplink_latency_seconds", one)] == 0.0125
    assert samples[("nmbalance_uplink_receive_bytes_total", one)] == 100
    assert samples[("nmbalance_uplink_transmit_packets_total", one)] == 4
    assert samples[("nmbalance_uplink_new_connections_total", one)] == 12
    assert samples[("nmbalance_uplink_state_changes_total", one)] == 3
    assert samples[("nmbalance_drift_repairs_total", ())] == 1
    assert ("nmbalance_uplink_measured_share_ratio", one) not in samples  # not known: absent


def test_the_table_and_the_change_lines() -> None:
    doc = from_daemon({"manager": {"Mode": "weighted"}, "uplinks": [BUS_UPLINK]},
                      KernelSettings(), {"routes": [], "rules": []})
    text = render(doc)
    row = r"^ISP1 +degraded +25.0% +- +wan1 +10.101.0.2 +10.101.0.1 +kernel +12.5ms +0%"
    assert re.search(row, text, re.M), text
    assert "\n             slow\n" in text
    lines = change_lines(None, doc)
    assert len(lines) == 1 and lines[0].endswith("ISP1 degraded (slow) share 25.0% dev wan1 "
                                                 "via 10.101.0.1")
    assert change_lines(doc, doc) == []
    assert sparkline([1.0, None, 2.0, 3.0]) == "▁ ▅█"


def test_watch_on_a_pipe_prints_changes_and_ends_on_ctrl_c() -> None:
    doc = from_daemon({"manager": {"Mode": "weighted"}, "uplinks": [BUS_UPLINK]},
                      KernelSettings(), {"routes": [], "rules": []})
    down = dict(doc, uplinks=[dict(doc["uplinks"][0], state="down", reason="no carrier")])
    docs = iter([doc, doc, down])
    naps = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    out = io.StringIO()
    assert watch(lambda: next(docs), out, sleep=sleep) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "ISP1 degraded" in lines[0] and "ISP1 down (no carrier)" in lines[1]


def test_doctor_reads_networkd_conf_and_its_drop_ins(tmp_path: Path) -> None:
    (tmp_path / "etc/systemd/networkd.conf.d").mkdir(parents=True)
    (tmp_path / "etc/systemd/networkd.conf").write_text(
        "[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n")
    assert _networkd((7, networkd_settings(tmp_path))).verdict == PASS
    (tmp_path / "etc/systemd/networkd.conf.d/50-x.conf").write_text(
        "[Network]\nManageForeignRoutes=yes\n")
    found = _networkd((7, networkd_settings(tmp_path)))
    assert found.verdict == FAIL and "ManageForeignRoutes is on" in found.why
    assert found.fix.startswith("in /etc/systemd/networkd.conf, [Network] ManageForeignRoutes=no")
    assert _networkd((7, networkd_settings(tmp_path / "none"))).verdict == FAIL  # defaults: yes
    assert _networkd(None).verdict == PASS


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_and_option_says_what_it_is() -> None:
    subs = _subcommands()
    assert set(subs) == set(cli.COMMANDS)
    parser = cli._parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert all(choice.help for choice in action._choices_actions)
    for name, sub in subs.items():
        for option in sub._actions:
            assert option.help, (name, option.dest)
    assert "nm-up" in subs["dispatch"].format_help()


def test_verbose_and_quiet_go_after_the_command_too() -> None:
    parser = cli._parser()
    assert parser.parse_args(["check", "-v"]).verbose
    assert parser.parse_args(["-v", "check"]).verbose
    assert parser.parse_args(["status", "-q"]).quiet
    assert not parser.parse_args(["status"]).verbose


def test_config_errors_say_in_words_what_a_value_should_be() -> None:
    for text in ('[[uplink]]\nname = "bad name!"\ninterface = "eth0"\n',
                 '[[uplink]]\nname = "a"\ninterface = "eth 0"\n',
                 '[[uplink]]\nname = "a"\ninterface = "eth0"\n[kernel]\ntable = "nmbalance-x"\n',
                 '[[uplink]]\nname = "a"\ninterface = "eth0"\n[[lan]]\nname = "l"\n'
                 'interface = "eth1:0:0"\n',
                 'warn_email = "not mail"\n[[uplink]]\nname = "a"\ninterface = "eth0"\n'):
        with pytest.raises(Exception) as caught:
            load_config_text(text, "x.toml")
        message = str(caught.value)
        assert "should be" in message and "pattern" not in message and "^" not in message, message
    with pytest.raises(Exception) as caught:
        load_config_text('mode = "balance"\n[[uplink]]\nname = "a"\ninterface = "e"\n', "x.toml")
    assert "'balanced' for weighted, 'failover' for priority" in str(caught.value)


def test_check_warns_of_twice_named_rules_and_missing_interfaces(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "n.toml"
    path.write_text('[[uplink]]\nname = "A"\ninterface = "nmbnone0"\nprobe = ["192.0.2.1"]\n'
                    '[[lan]]\nname = "L"\ninterface = "nmbnone1:0"\n'
                    + '[[rule]]\nname = "r"\nmethod = "weighted"\nuplinks = ["A"]\n' * 2)
    assert cli.main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "(1 uplink, 1 LAN, 2 rules, mode weighted)" in out
    assert "rule name 'r' is used twice" in err
    if Path("/sys/class/net").is_dir():  # a chroot without /sys can't tell (and says nothing)
        assert "uplink A: interface nmbnone0 does not exist here (now)" in err
        assert "LAN L: interface nmbnone1 does not exist here" in err
    assert cli.main(["check", "-q", "-c", str(path)]) == 0
    assert capsys.readouterr().err == ""
