"""Crafted input costs linear time and gives a bounded answer. The limits here
are generous (a loaded 2-core machine must pass); bench/config_check.py
prints the real figures."""

from __future__ import annotations

import time

import pytest

from nmbalance.config import load_config_text
from nmbalance.errors import ConfigError, ConfigErrors

SLACK = 10.0  # seconds; quadratic behaviour on these inputs takes minutes


def timed_error(text: str, name: str = "c.toml") -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        load_config_text(text, name)
    return str(info.value), time.monotonic() - started


def test_a_legacy_line_of_50000_spaces() -> None:
    text = "ISP1 wan1 isp 192.0.2.1\nmode=" + " " * 50_000 + "x" + " " * 50_000 + "y\n"
    message, seconds = timed_error(text, "balance.conf")
    assert "balance.conf:2:" in message and seconds < SLACK


def test_20000_bad_probe_entries_give_one_error() -> None:
    text = '[[uplink]]\nname = "A"\ninterface = "wan1"\nprobe = [' + ", ".join(
        ['"not-an-ip"'] * 20_000) + "]\n"
    message, seconds = timed_error(text)
    assert seconds < SLACK
    assert len(message.splitlines()) == 1 and "at most 16" in message


def test_many_errors_are_listed_up_to_a_bound() -> None:
    text = "".join(f'[[uplink]]\nname = "U{i}"\ninterface = "wan{i}"\nweight = -1\n'
                   for i in range(100))
    message, _ = timed_error(text)
    lines = message.splitlines()
    assert len(lines) == 21 and lines[-1].endswith("... and 80 more problems")
    assert all(line.startswith("c.toml:") for line in lines)


@pytest.mark.parametrize("kind", ["toml", "legacy"])
def test_a_one_megabyte_crafted_file(kind: str) -> None:
    if kind == "toml":
        text = ('[[uplink]]\nname = "A"\ninterface = "wan1"\nconnection = "' + "\\u00e9" * 85_000
                + '"\n' + "# " + "[" * 200_000 + "\n" + 'x = """' + '\\"' * 150_000 + '"""\n')
    else:
        text = "ISP1 wan1 isp 192.0.2.1\n" + ("warn_email=" + "a" * 1100 + "\n") * 900
    assert len(text.encode()) >= 1_000_000
    _, seconds = timed_error(text, "c.toml" if kind == "toml" else "balance.conf")
    assert seconds < SLACK
