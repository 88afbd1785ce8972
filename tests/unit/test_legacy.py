"""Net-ISP-Balance's balance.conf: a corpus written in the styles its users
write (the package's example as installed and edited, host-name pings, every
lsm option, alias LANs, groups, ppp, tabs, CRLF), each read as
Net-ISP-Balance reads it and converted to TOML that loads back the same."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from nmbalance.config.convert import to_toml
from nmbalance.config.legacy import NO_EFFECT, looks_legacy
from nmbalance.config.load import load, load_text
from nmbalance.core.decide import allowed_pairs, decide
from nmbalance.core.facts import Facts, GatewaySource, LanFacts, UplinkFacts
from nmbalance.errors import ConfigError, ConfigErrors

CORPUS = Path(__file__).resolve().parent.parent / "nib_corpus"
ACCEPTED = sorted(p.name for p in CORPUS.glob("*.conf") if p.name != "example-as-shipped.conf")


@pytest.mark.parametrize("name", ACCEPTED)
def test_each_config_is_accepted_and_converts_to_the_same_model(name: str) -> None:
    loaded = load(CORPUS / name)
    assert loaded.config.uplink and loaded.config.firewall.restrictive
    text = to_toml(loaded.config, "converted")
    assert not looks_legacy(text)
    again = load_text(text, "converted.toml")
    assert again.config == loaded.config
    assert again.warnings == []


def test_the_example_as_shipped_is_a_balance_conf_without_isp_rows() -> None:
    path = CORPUS / "example-as-shipped.conf"
    assert looks_legacy(path.read_text())
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        load(path)
    message = str(info.value)
    assert "no ISP rows" in message and "not valid TOML" not in message
    assert f"{path}:" in message


def test_what_each_row_means() -> None:
    config = load(CORPUS / "hostname-pings.conf").config
    ups = {u.name: u for u in config.uplink}
    assert ups["CABLE"].probe == ["ping.example.net"] and ups["CABLE"].weight == 1
    assert ups["FALLBACK"].probe == ["gateway"]
    assert ups["FALLBACK"].gateway == IPv4Address("192.168.20.254")
    assert ups["SPARE"].weight == 1 and ups["SPARE"].gateway == "auto"
    lans = {lan.name: lan for lan in config.lan}
    assert lans["VSUBNET"].interface == "eth3:0" and lans["VSUBNET"].device == "eth3"
    assert config.mode == "weighted"


def test_weights_and_modes_as_written() -> None:
    weights = load(CORPUS / "weights.conf").config
    assert [u.weight for u in weights.uplink] == [2.5, 1, 1500, 0]
    assert weights.mode == "weighted" and weights.lan[0].name == "LAN"
    failover = load(CORPUS / "failover-weights.conf").config
    assert failover.mode == "priority"


def test_every_lsm_option_maps_or_warns_once() -> None:
    loaded = load(CORPUS / "every-lsm-option.conf")
    health = loaded.config.health
    assert (health.interval_ms, health.timeout_ms, health.max_packet_loss) == (2000, 1000, 20)
    assert health.min_successive_pkts_rcvd == 8 and health.long_down_time == 300
    assert loaded.config.warn_email == "noc@example.net,root"
    warned = {w.split("'")[1] for w in loaded.warnings}
    assert warned == set(NO_EFFECT)
    assert all(w.startswith(f"{CORPUS / 'every-lsm-option.conf'}:") and "no effect" in w
               for w in loaded.warnings)


def test_default_ping_is_explicit_and_warned() -> None:
    loaded = load_text("A eth0 isp\nB eth1 isp default\nC eth2 isp 198.51.100.1\n", "b.conf")
    assert [u.probe for u in loaded.config.uplink] == [["gateway"], ["gateway"],
                                                         [IPv4Address("198.51.100.1")]]
    assert [w.split(":")[1] for w in loaded.warnings] == ["1", "2"]
    assert "www.google.ca" in loaded.warnings[0]


def test_all_mistakes_of_a_file_in_one_run() -> None:
    text = ("A eth0 isp 198.51.100.1 heavy\n"  # 1: weight
            "B eth1 wan 198.51.100.1\n"  # 2: role
            "C eth2 isp 198.51.100.300\n"  # 3: ping
            "mode=balance-rr\n"  # 4: mode
            "interval_ms=fast\n"  # 5: an lsm value
            "frobnicate=1\n"  # 6: neither ours nor lsm's
            "D\n"  # 7: neither row nor option
            "forwarding_group=A NOPE\n")  # 8: unknown service
    with pytest.raises(ConfigErrors) as info:
        load_text(text, "b.conf")
    lines = [e.line for e in info.value.errors]
    assert lines == [1, 2, 3, 4, 5, 6, 7, 8], str(info.value)


def test_format_detection_by_content() -> None:
    assert looks_legacy("#A eth0 isp 1.2.3.4\nmode=balanced\n")
    assert looks_legacy("A\teth0\tISP\n")
    assert not looks_legacy('# A eth0 isp 1.2.3.4\n[[uplink]]\nname = "A"\ninterface = "eth0"\n')
    assert not looks_legacy('mode = "weighted"\n')


def test_groups_as_net_isp_balance_pairs_them() -> None:
    config = load(CORPUS / "groups-and-lans.conf").config
    pairs = allowed_pairs(config)
    assert frozenset(("OFFICE", "ISP_A")) in pairs and frozenset(("OFFICE", "ISP_B")) in pairs
    assert frozenset(("GUEST", "ISP_B")) in pairs and frozenset(("GUEST", "ISP_A")) not in pairs
    assert frozenset(("GUEST", "LAB")) in pairs  # ":lan" alone: every LAN with every LAN
    assert frozenset(("LAB", "ISP_A")) not in pairs
    crlf = load(CORPUS / "openvpn-crlf.conf").config
    assert allowed_pairs(crlf) == {frozenset(p) for p in (
        ("LAN1", "TUN0"), ("LAN1", "TUN1"), ("TUN0", "TUN1"))}  # LAN2 alone: nothing


def _facts(config_text: str) -> tuple[object, Facts]:
    config = load_text(config_text, "b.conf").config
    ups = tuple(UplinkFacts(
        name=u.name, interface=u.interface, present=True, carrier=True,
        addresses=(IPv4Interface(f"10.10{i}.0.2/24"),), gateway=IPv4Address(f"10.10{i}.0.1"),
        gateway_source=GatewaySource.KERNEL) for i, u in enumerate(config.uplink, start=1))
    lans = (LanFacts("OFFICE", "br0", True, (IPv4Network("10.1.0.0/24"),)),
            LanFacts("GUEST", "br0:1", True, (IPv4Network("10.2.0.0/24"),)))
    return config, Facts(uplinks=ups, lans=lans, links=frozenset({"eth0", "eth1", "br0"}))


def test_forwarding_starts_on_the_lan_side_only() -> None:
    config, facts = _facts("A eth0 isp 198.51.100.1\nB eth1 isp 198.51.100.1\n"
                           "OFFICE br0 lan\nGUEST br0:1 lan\n"
                           "forwarding_group=OFFICE :isp\nforwarding_group=GUEST B\n")
    allowed = set(decide(config, facts).nft.contents.forward_allowed)  # type: ignore[arg-type]
    assert allowed == {
        ("br0", "10.1.0.0/24", "eth0", "0.0.0.0/0"), ("br0", "10.1.0.0/24", "eth1", "0.0.0.0/0"),
        ("br0", "10.2.0.0/24", "eth1", "0.0.0.0/0"),
    }
    assert not any(src.startswith("eth") for src, *_ in allowed)


def test_without_groups_lans_reach_each_other_and_every_uplink() -> None:
    config, facts = _facts("A eth0 isp 198.51.100.1\nOFFICE br0 lan\nGUEST br0:1 lan\n")
    plan = decide(config, facts)  # type: ignore[arg-type]
    assert set(plan.nft.contents.forward_allowed) == {
        ("br0", "10.1.0.0/24", "eth0", "0.0.0.0/0"), ("br0", "10.2.0.0/24", "eth0", "0.0.0.0/0"),
        ("br0", "10.1.0.0/24", "br0", "10.2.0.0/24"), ("br0", "10.2.0.0/24", "br0", "10.1.0.0/24"),
    }
    assert plan.forwarding  # a router with LANs forwards
    assert set(plan.nft.contents.lan_sources) == {("br0", "10.1.0.0/24"), ("br0", "10.2.0.0/24")}


def test_weight_zero_is_a_backup() -> None:
    config, facts = _facts("A eth0 isp 198.51.100.1 2\nB eth1 isp 198.51.100.1 0\n")
    plan = decide(config, facts)  # type: ignore[arg-type]
    assert plan.uplink("A").share == 1.0 and plan.uplink("B").share == 0.0
    down = Facts(uplinks=(UplinkFacts(name="A", interface="eth0"), facts.uplinks[1]),
                 lans=facts.lans, links=facts.links)
    plan = decide(config, down)  # type: ignore[arg-type]
    assert plan.uplink("B").share == 1.0


def test_mss_clamped_on_ppp_and_tun_only() -> None:
    config = load_text("A eth0 isp 198.51.100.1\nB ppp0 isp 198.51.100.1\n"
                       "C tun1 isp 198.51.100.1\n", "b.conf").config
    facts = Facts(uplinks=tuple(UplinkFacts(
        name=u.name, interface=u.interface, present=True, carrier=True, point_to_point=True,
        addresses=(IPv4Interface(f"10.10{i}.0.2/24"),))
        for i, u in enumerate(config.uplink, start=1)))
    plan = decide(config, facts)
    assert plan.nft.contents.mss_clamped == ("ppp0", "tun1")
    assert "tcp option maxseg size set rt mtu" in plan.nft.structure
    plain = load_text("A eth0 isp 198.51.100.1\n", "b.conf").config
    assert "maxseg" not in decide(plain, Facts()).nft.structure


def test_a_route_network_is_trusted_like_net_isp_balances_add_route() -> None:
    config, facts = _facts("A eth0 isp 198.51.100.1\nOFFICE br0 lan\n")
    config = load_text(to_toml(config, "") + '\n[[route]]\nto = "10.8.0.0/24"\n'  # type: ignore[arg-type]
                       'interface = "tun5"\n', "c.toml").config
    contents = decide(config, facts).nft.contents
    assert ("br0", "10.1.0.0/24", "tun5", "10.8.0.0/24") in contents.forward_allowed
    assert ("tun5", "10.8.0.0/24", "br0", "10.1.0.0/24") in contents.forward_allowed
    assert ("tun5", "10.8.0.0/24") in contents.lan_sources
    assert not any(a == "eth0" for a, *_ in contents.forward_allowed)
