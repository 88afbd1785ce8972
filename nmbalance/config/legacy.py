"""Net-ISP-Balance's balance.conf, read as-is.

The file is a table `service device role ping-ip [weight [gateway]]`
(roles `isp` and `lan`; gateway `default` means discover) plus `key=value`
options. It is turned into the same dict the TOML loader produces, with the
line of every value, so validation errors point into the original file.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from nmbalance.config.toml_lines import Path
from nmbalance.errors import ConfigError

# Options Net-ISP-Balance documents, and where each lands in our model.
_HEALTH_OPTIONS = (
    "interval_ms",
    "timeout_ms",
    "max_packet_loss",
    "max_successive_pkts_lost",
    "min_packet_loss",
    "min_successive_pkts_rcvd",
    "long_down_time",
)
OPTIONS = ("mode", "forwarding_group", "warn_email", *_HEALTH_OPTIONS)

_OPTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _option(line: str) -> tuple[str, str] | None:
    """`key=value` (no regex over the value: a crafted line must cost linear time)."""
    key, eq, value = line.partition("=")
    key = key.strip()
    if not eq or not _OPTION_KEY.fullmatch(key):
        return None
    return key, value.strip()


def looks_legacy(text: str) -> bool:
    """True when the text carries a balance.conf service table."""
    for line in text.split("\n"):
        fields = line.split("#", 1)[0].split(None, 3)
        if len(fields) >= 3 and fields[2].lower() in ("isp", "lan"):
            return True
    return False


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _integer(value: str) -> int | str:
    # Leave non-numbers (and numbers no setting can hold) to pydantic, which says
    # what it expected.
    return int(value) if re.fullmatch(r"-?[0-9]{1,18}", value) else value


def parse_legacy(text: str, source: str) -> tuple[dict[str, Any], dict[Path, int]]:
    data: dict[str, Any] = {"uplink": [], "lan": []}
    lines: dict[Path, int] = {}
    health: dict[str, Any] = {}
    groups: list[dict[str, Any]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if option := _option(line):
            key, value = option
            if key not in OPTIONS:
                raise ConfigError(
                    source, f"unknown option {key!r}{_suggest(key, OPTIONS)}", line=number, field=key
                )
            if key == "mode":
                if value not in ("balanced", "failover"):
                    raise ConfigError(
                        source, f"expected 'balanced' or 'failover', got {value!r}",
                        line=number, field="mode",
                    )
                data["mode"] = value
                lines[("mode",)] = number
            elif key == "warn_email":
                data["warn_email"] = value or None
                lines[("warn_email",)] = number
            elif key == "forwarding_group":
                lines[("forwarding_group", len(groups))] = number
                lines[("forwarding_group", len(groups), "members")] = number
                groups.append({"members": value.split()})
            else:
                health[key] = _integer(value)
                lines[("health", key)] = number
            continue
        fields = line.split()
        if len(fields) < 3:
            raise ConfigError(
                source,
                "expected `service device role ping-ip [weight [gateway]]` or `option=value`",
                line=number,
            )
        if len(fields) > 6:
            raise ConfigError(
                source, f"too many columns ({len(fields)}); the table has at most 6", line=number
            )
        service, device, role = fields[0], fields[1], fields[2].lower()
        if role == "lan":
            index = len(data["lan"])
            data["lan"].append({"name": service, "interface": device})
            for key in ("", "name", "interface"):
                lines[("lan", index, key) if key else ("lan", index)] = number
            continue
        if role != "isp":
            raise ConfigError(
                source, f"role must be 'isp' or 'lan', got {fields[2]!r}", line=number, field="role"
            )
        uplink: dict[str, Any] = {"name": service, "interface": device}
        if len(fields) > 3 and fields[3] not in ("-", "none"):
            uplink["probe"] = [fields[3]]
        if len(fields) > 4:
            uplink["weight"] = _integer(fields[4])
        if len(fields) > 5:
            uplink["gateway"] = "auto" if fields[5] == "default" else fields[5]
        index = len(data["uplink"])
        data["uplink"].append(uplink)
        lines[("uplink", index)] = number
    if health:
        data["health"] = health
    if groups:
        data["forwarding_group"] = groups
    return data, lines
