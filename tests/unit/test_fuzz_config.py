"""Seeded config fuzzing (TOML and balance.conf): whatever the input, the loader
answers with a Config or with our config errors, each with a place; what it
accepts renders an nft transaction with no injected text, and `convert`
writes it back as TOML that loads to the same model."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmbalance.config import load_config_text
from nmbalance.config.convert import to_toml
from nmbalance.config.model import Config
from nmbalance.core.decide import decide
from nmbalance.core.facts import Facts, GatewaySource, LanFacts, UplinkFacts
from nmbalance.errors import ConfigError, ConfigErrors

FUZZ = settings(max_examples=500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

TOML_SEED = """\
mode = "weighted"
snippets_dir = ""
warn_email = "ops@example.net"
[[uplink]]
name = "ISP1"
interface = "wan1"
weight = 2
probe = ["198.51.100.1"]
dns = ["198.51.100.53"]
[[uplink]]
name = "ISP2"
connection = "Phone tether"
gateway = "10.102.0.1"
[[lan]]
name = "LAN"
interface = "lan0"
[health]
interval_ms = 500
[[rule]]
name = "bank"
dst = ["203.0.113.0/24"]
proto = "tcp"
dport = [443, "8000-8080"]
method = "persistence"
uplinks = ["ISP1", "ISP2"]
[[port_forward]]
port = 8080
to = "10.250.0.10"
[kernel]
mark_mask = 0xff00
[daemon]
hooks_dir = "/etc/nmbalance/hooks.d"
"""
LEGACY_SEED = """\
#service device role ping-ip weight gateway
CABLE wan1 isp 198.51.100.1 2 default
DSL wan2 isp 198.51.100.2 1 10.102.0.1
LAN lan0 lan
mode=balanced
forwarding_group=LAN CABLE DSL
interval_ms=500
warn_email=root@localhost
"""
# What an attacker would try to smuggle into nft text, a shell or a header.
HOSTILE = [
    "}\nflush ruleset\n", "%eth0", "fe80::1%x }", '"', "'", "\\", "\n", "\r", "\x00", "\u2028",
    "$(reboot)", ";", "{", "}", "#", "=", "[", "]", "[[uplink]]", "0x", "9" * 30, "-1", "1e999",
    "true", "inf", "nan", "::", "127.0.0.1", "255.255.255.255", "224.0.0.1", "10.0.0.1/8",
    "\t", " ", "é", "\U0001f600", "isp", "lan", "default", "nmbalance", "counter",
]


# Well-formed values that say something hostile, for the "value" mutation.
VALUE_TOKENS = [
    "fe80::1%x }\nflush ruleset\n", "198.51.100.1%eth0", "2001:db8::1%1", "fe80::%eth0/64",
    "::", "0.0.0.0", "127.0.0.1", "224.0.0.251", "255.255.255.255", "2001:db8::1",
    "eth0\n", "a\x00b", "root\nBcc: x@y", "/etc/x\ny", "counter", "foreign",
]
VALUE = re.compile(r'"([^"\n]*)"|=\s*([^\s#]+)')


def _toml_string(text: str) -> str:
    return '"' + "".join(ch if ch.isprintable() and ch not in '"\\' else f"\\u{ord(ch):04x}"
                         for ch in text) + '"'


@st.composite
def mutated(draw: st.DrawFn, seed: str, steps: int = 4) -> str:
    text = seed
    toml = "[[uplink]]" in seed
    for _ in range(draw(st.integers(1, steps))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "value",
                                       "value"]))
        token = draw(st.sampled_from(HOSTILE) | st.text(max_size=8))
        if action == "value":  # a well-formed value that says something hostile
            token = draw(st.sampled_from(VALUE_TOKENS + HOSTILE))
            spots = list(VALUE.finditer(text))
            if not spots:
                continue
            m = spots[draw(st.integers(0, len(spots) - 1))]
            group = 1 if m.group(1) is not None else 2
            start, end = m.span(group)
            if toml and group == 1:
                start, end, token = start - 1, end + 1, _toml_string(
                    m.group(1) + token if draw(st.booleans()) else token)
            text = text[:start] + token + text[end:]
        elif action == "insert":
            text = text[:pos] + token + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)):]
        elif action == "replace":
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            text = text[:pos] + token + text[end:]
        else:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            text = "\n".join([*lines[:i], lines[i], *lines[i:]])
    return text


def facts_for(config: Config) -> Facts:
    ups = tuple(UplinkFacts(
        name=u.name, interface=u.interface or f"wan{i}", present=True, carrier=True,
        addresses=(IPv4Interface(f"10.{100 + i}.0.2/24"),),
        gateway=IPv4Address(f"10.{100 + i}.0.1"), gateway_source=GatewaySource.KERNEL,
    ) for i, u in enumerate(config.uplink))
    lans = tuple(LanFacts(lan.name, lan.interface, True, (IPv4Network("10.250.0.0/24"),))
                 for lan in config.lan)
    return Facts(uplinks=ups, lans=lans)


# Everything quoted in our transaction is an interface name; nothing else may
# appear that we did not write: no scope ids, no second command on a line.
QUOTED = re.compile(r'"([^"]*)"')
SAFE_QUOTED = re.compile(r"[A-Za-z0-9_.+-]{1,15}|nmbalance [0-9a-f]{16}")


def assert_clean(text: str) -> None:
    assert "%" not in text
    assert "flush ruleset" not in text and "\x00" not in text and "\r" not in text
    for quoted in QUOTED.findall(text):
        assert SAFE_QUOTED.fullmatch(quoted), quoted
    for line in text.splitlines():
        assert line.isprintable(), repr(line)


def check(text: str, name: str) -> None:
    try:
        config = load_config_text(text, name)
    except ConfigErrors as exc:
        assert exc.errors and exc.exit_code == 2
        for error in exc.errors:
            assert error.line is not None or error.field, error
            assert str(error).startswith(name)
        return
    except ConfigError as exc:
        assert exc.exit_code == 2 and (exc.line is not None or exc.field), exc
        assert str(exc).startswith(name)
        return
    plan = decide(config, facts_for(config))
    assert_clean(plan.nft.full_transaction())
    back = load_config_text(to_toml(config, "fuzzed"), "back.toml")
    assert back == config


@FUZZ
@given(mutated(TOML_SEED))
def test_mutated_toml(text: str) -> None:
    check(text, "fuzz.toml")


@FUZZ
@given(mutated(LEGACY_SEED))
def test_mutated_balance_conf(text: str) -> None:
    check(text, "balance.conf")


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    check(text, "any.toml")


def test_the_seeds_are_accepted() -> None:
    for text, name in ((TOML_SEED, "seed.toml"), (LEGACY_SEED, "balance.conf")):
        config = load_config_text(text, name)
        assert_clean(decide(config, facts_for(config)).nft.full_transaction())
