"""Net-ISP-Balance's balance.conf, read as-is.

The file is a table `service device role [ping-ip [weight [gateway]]]`
(roles `isp` and `lan`; `default` in a column means its default) plus
`key=value` options: `mode`, `forwarding_group` and lsm's options. It is
turned into the same dict the TOML loader produces, with the line of every
value, so validation errors point into the original file.

Everything Net-ISP-Balance's parser accepts is accepted and means the same
(case-insensitive mode and role, `:lan`/`:isp`, any weight, every lsm
option). What it silently drops or misreads (a row whose role is neither
isp nor lan, a row missing its device, a weight that is not a number, a
misspelt mode, a line that is neither row nor option) is an error with its
line: a silently lost ISP is what hurt its users. All problems of a file
are reported together.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from nmbalance.config.toml_lines import Path
from nmbalance.errors import ConfigError

# lsm options nmbalance has the concept of, and where each lands ([health] keeps lsm's names).
HEALTH_OPTIONS = {
    "interval_ms": "interval_ms",
    "timeout_ms": "timeout_ms",
    "max_packet_loss": "max_packet_loss",
    "max_successive_pkts_lost": "max_successive_pkts_lost",
    "min_packet_loss": "min_packet_loss",
    "min_successive_pkts_rcvd": "min_successive_pkts_rcvd",
    "max_successive_pkts_recvd": "min_successive_pkts_rcvd",  # the name Net-ISP-Balance documents
    "long_down_time": "long_down_time",
}
# lsm options with no counterpart: accepted, each with one warning saying what to do instead.
NO_EFFECT = {
    "check_arp": "nmbalance probes with ICMP echo only",
    "checkip": "give the target in the row's ping-ip column",
    "debug": "run `nmbalance run -v` for more detail",
    "device": "the row's device column names it",
    "eventscript": "put executables in /etc/nmbalance/hooks.d/up/ and down/",
    "notifyscript": "put executables in /etc/nmbalance/hooks.d/up/ and down/",
    "long_down_email": "warn_email is mailed on long-down too",
    "long_down_eventscript": "put executables in /etc/nmbalance/hooks.d/long-down/",
    "long_down_notifyscript": "put executables in /etc/nmbalance/hooks.d/long-down/",
    "logic": "an uplink is up when `reliability` of its targets answer ([health] in TOML)",
    "name": "the row's service column names it",
    "queue": "nmbalance needs no queue",
    "sourceip": "probes leave from the uplink's own address",
    "startup_acceleration": "nmbalance probes at interval_ms from the start",
    "startup_burst_interval": "nmbalance probes at interval_ms from the start",
    "startup_burst_pkts": "nmbalance probes at interval_ms from the start",
    "status": "an uplink starts unknown and is judged by its first probes",
    "ttl": "probes use the system's default TTL",
    "unknown_up_notify": "hooks run for every change, the first one included",
}
OPTIONS = ("mode", "forwarding_group", "warn_email", *HEALTH_OPTIONS, *NO_EFFECT)
MODES = {"balanced": "balanced", "failover": "failover"}
DEFAULT_PING = "gateway"  # where Net-ISP-Balance pinged www.google.ca

_OPTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?")


def _option(line: str) -> tuple[str, str] | None:
    """`key=value` (no regex over the value: a crafted line must cost linear time)."""
    key, eq, value = line.partition("=")
    key = key.strip()
    if not eq or not _OPTION_KEY.fullmatch(key):
        return None
    return key, value.strip()


def _is_row(line: str) -> bool:
    fields = line.split(None, 3)
    return len(fields) >= 3 and fields[2].lower() in ("isp", "lan")


def looks_legacy(text: str) -> bool:
    """A balance.conf, by what a TOML file can't hold: a service row (`A eth0 isp`),
    or, with no TOML table in the file, a commented-out one (the shipped example)."""
    commented_row = False
    for line in text.split("\n"):
        body, _, comment = line.partition("#")
        if _is_row(body):
            return True
        if body.lstrip().startswith("["):
            return False  # a TOML table: an nmbalance.toml, whatever its comments say
        if not body.strip() and _is_row(comment.lstrip("#")):
            commented_row = True
    return commented_row


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _integer(value: str) -> int | str:
    # Leave non-numbers (and numbers no setting can hold) to pydantic, which says
    # what it expected.
    return int(value) if re.fullmatch(r"-?[0-9]{1,18}", value) else value


@dataclass
class Legacy:
    """What a balance.conf says, as the TOML loader's dict, and what was wrong with it."""

    data: dict[str, Any]
    lines: dict[Path, int]
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.out = Legacy({"uplink": [], "lan": []}, {})
        self.health: dict[str, Any] = {}
        self.groups: list[dict[str, Any]] = []
        self.ignored: dict[str, int] = {}  # lsm option -> its first line
        self.isp_rows = 0  # well-formed or not
        self.refused: set[str] = set()  # services of rows refused (groups may name them)

    def error(self, number: int, message: str, field: str | None = None) -> None:
        self.out.errors.append(ConfigError(self.source, message, line=number, field=field))

    def warn(self, number: int, message: str) -> None:
        self.out.warnings.append(f"{self.source}:{number}: {message}")

    def option(self, number: int, key: str, value: str) -> None:
        data, lines = self.out.data, self.out.lines
        if key == "mode":
            mode = MODES.get(value.lower())
            if mode is None:
                self.error(number, f"expected 'balanced' or 'failover', got {value!r}"
                           f"{_suggest(value.lower(), list(MODES))}", "mode")
                return
            data["mode"], lines[("mode",)] = mode, number
        elif key == "warn_email":
            data["warn_email"], lines[("warn_email",)] = value or None, number
        elif key == "forwarding_group":
            if not value.split():
                self.error(number, "forwarding_group names no services", "forwarding_group")
                return
            index = len(self.groups)
            lines[("forwarding_group", index)] = number
            lines[("forwarding_group", index, "members")] = number
            self.groups.append({"members": value.split()})
        elif key in HEALTH_OPTIONS:
            target = HEALTH_OPTIONS[key]
            self.health[target] = _integer(value)
            lines[("health", target)] = number
        elif key in NO_EFFECT:
            if key not in self.ignored:
                self.ignored[key] = number
                self.warn(number, f"lsm option {key!r} has no effect in nmbalance: "
                                  f"{NO_EFFECT[key]}")
        else:
            self.error(number, f"unknown option {key!r}{_suggest(key, OPTIONS)}", key)

    def row(self, number: int, fields: list[str]) -> None:
        if len(fields) < 3:
            self.error(number, "expected `service device role [ping-ip [weight [gateway]]]` "
                               "or `option=value`")
            return
        if len(fields) > 6:
            self.error(number, f"too many columns ({len(fields)}); the table has at most 6")
            return
        service, device, role = fields[0], fields[1], fields[2].lower()
        self.refused.add(service)  # until the row is taken
        if service.lower() in ("up", "down"):
            self.error(number, f"a service can not be named {service!r}", "service")
            return
        if role == "lan":
            # Net-ISP-Balance ignores the other columns of a LAN row, and so do we.
            index = len(self.out.data["lan"])
            self.out.data["lan"].append({"name": service, "interface": device})
            self.refused.discard(service)
            for key in ("", "name", "interface"):
                self.out.lines[("lan", index, key) if key else ("lan", index)] = number
            return
        if role != "isp":
            self.isp_rows += role != "lan"  # a misspelt role is likely a lost ISP
            self.error(number, f"role must be 'isp' or 'lan', got {fields[2]!r}"
                               f"{_suggest(role, ['isp', 'lan'])}", "role")
            return
        self.isp_rows += 1
        if ":" in device:
            self.error(number, f"an ISP on an address label ({device}) is not supported: "
                               "nmbalance routes an uplink by its device and probes from its "
                               f"address; write {device.split(':', 1)[0]!r}",
                       f"uplink[{len(self.out.data['uplink'])}].interface")
            return
        uplink: dict[str, Any] = {"name": service, "interface": device}
        ping = fields[3] if len(fields) > 3 else "default"
        if ping.lower() == "default":
            self.warn(number, f"{service}: no ping target, so its gateway is probed "
                              "(Net-ISP-Balance pinged www.google.ca); give a host that "
                              "answers pings beyond the ISP to see upstream failures")
            uplink["probe"] = [DEFAULT_PING]
        elif ping not in ("-", "none"):
            uplink["probe"] = [ping]
        if len(fields) > 4 and fields[4].lower() != "default":
            weight = fields[4]
            if not _NUMBER.fullmatch(weight):
                self.error(number, f"weight must be a number of 0 or more, got {weight!r}",
                           f"uplink[{len(self.out.data['uplink'])}].weight")
                return
            uplink["weight"] = float(weight) if "." in weight else int(weight)
        if len(fields) > 5 and fields[5].lower() != "default":
            uplink["gateway"] = fields[5]
        index = len(self.out.data["uplink"])
        self.out.data["uplink"].append(uplink)
        self.refused.discard(service)
        self.out.lines[("uplink", index)] = number

    def finish(self, last_line: int) -> Legacy:
        data = self.out.data
        if self.health:
            data["health"] = self.health
        # Checked here rather than after validation, so it is reported with the rest.
        services = {row["name"] for row in (*data["uplink"], *data["lan"])} | self.refused
        for index, group in enumerate(self.groups):
            for name in group["members"]:
                if name not in services and name not in (":isp", ":lan"):
                    self.error(self.out.lines[("forwarding_group", index)],
                               f"unknown service {name!r}{_suggest(name, sorted(services))}",
                               f"forwarding_group[{index}].members")
            group["members"] = [m for m in group["members"] if m in services or m[:1] == ":"]
        if self.groups:
            data["forwarding_group"] = [g for g in self.groups if g["members"]]
        # Net-ISP-Balance always installs its firewall; a balance.conf gets it too.
        data["firewall"] = {"restrictive": True}
        if not self.isp_rows:
            self.error(last_line, "no ISP rows: a balance.conf needs at least one "
                                  "`SERVICE DEVICE isp [PING-IP [WEIGHT [GATEWAY]]]` row "
                                  "(uncomment and edit the example's rows)")
        return self.out


def parse_legacy(text: str, source: str) -> Legacy:
    reader = _Reader(source)
    lines = text.split("\n")
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if option := _option(line):
            reader.option(number, *option)
        else:
            reader.row(number, line.split())
    return reader.finish(max(len(lines) - (lines[-1] == ""), 1))
