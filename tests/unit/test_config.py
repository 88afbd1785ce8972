from pathlib import Path

import pytest

from nmbalance.config import load_config, load_config_text
from nmbalance.config.convert import to_toml
from nmbalance.errors import ConfigError, ConfigErrors
from tests.bad_configs import BAD

LEGACY = """\
##service    device   role     ping-ip           weight  gateway
CABLE        wan1     isp      198.51.100.1      2       default
DSL          wan2     isp      198.51.100.2      1       10.102.0.1
LAN          lan0     lan
mode=failover
forwarding_group=LAN CABLE DSL
interval_ms=500
max_packet_loss=20
max_successive_pkts_lost=4
min_packet_loss=3
min_successive_pkts_rcvd=6
long_down_time=60
warn_email=root@localhost
"""


def test_legacy_balance_conf_maps_every_option() -> None:
    config = load_config_text(LEGACY, "balance.conf")
    assert config.mode == "priority"  # "failover" is an alias
    cable, dsl = config.uplink
    assert (cable.name, cable.interface, cable.weight, cable.gateway) == ("CABLE", "wan1", 2, "auto")
    assert str(dsl.gateway) == "10.102.0.1" and [str(p) for p in dsl.probe] == ["198.51.100.2"]
    assert config.lan[0].interface == "lan0"
    assert config.forwarding_group[0].members == ["LAN", "CABLE", "DSL"]
    h = config.health
    assert (h.interval_ms, h.max_packet_loss, h.max_successive_pkts_lost) == (500, 20, 4)
    assert (h.min_packet_loss, h.min_successive_pkts_rcvd, h.long_down_time) == (3, 6, 60)
    assert config.warn_email == "root@localhost"


def test_convert_round_trips() -> None:
    config = load_config_text(LEGACY, "balance.conf")
    text = to_toml(config, "converted")
    assert text.startswith("# converted\n")
    assert load_config_text(text, "converted.toml") == config


def test_balanced_alias_and_defaults() -> None:
    config = load_config_text("CABLE wan1 isp 198.51.100.1\nmode=balanced\n", "b.conf")
    assert config.mode == "weighted" and config.uplink[0].weight == 1
    assert config.kernel.mark_mask == 0xFF00 and config.kernel.table == "nmbalance"


def test_shipped_example_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "examples" / "nmbalance.toml")
    assert len(config.uplink) >= 2


@pytest.mark.parametrize(("case", "name", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_place(case: str, name: str, text: str, expected: list[str]) -> None:
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        load_config_text(text, name)
    message = str(info.value)
    assert info.value.exit_code == 2
    for part in expected:
        assert part in message, f"{case}: {part!r} not in {message!r}"
    assert message.startswith(name)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value) and "no such file" in str(info.value)
