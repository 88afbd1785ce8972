"""A Net-ISP-Balance installation's customisations, carried over by `convert`.

Next to balance.conf, Net-ISP-Balance runs the files of `balance/firewall/`,
`balance/routes/`, `balance/pre-run/`, `balance/post-run/` and calls lsm's
scripts from `balance/lsm/`. Each line is looked at: port forwards
(`$B->forward`, `$B->forward_with_snat`) become `[[port_forward]]`, routes
(`ip route add`, `$B->add_route`) become `[[route]]`, simple iptables rules
become nft rules for a snippet, where the translation is exact; the shipped
defaults that nmbalance's own firewall covers are named so; every other line
is listed with what to do. Nothing is run and nothing is written here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nmbalance.config.model import Config, PortForward, StaticRoute

FOLDERS = ("firewall", "routes", "pre-run", "post-run", "lsm")
PORTS = {"ssh": 22, "domain": 53, "ntp": 123, "http": 80, "https": 443, "smtp": 25,
         "telnet": 23, "ftp": 21, "imap": 143, "pop3": 110}
# Net-ISP-Balance's own defaults, which nmbalance's firewall does already.
_COVERED = (
    (re.compile(r"--source-port (domain|ntp|53|123)\b.*-j ACCEPT"),
     "DNS and NTP replies are accepted as established connections"),
    (re.compile(r"\$B->net\(\$_\).*--dport ssh|--dport ssh.*\$B->net\(\$_\)"),
     "the LANs may always reach the router, ssh included"),
)
_FORWARD = re.compile(
    r"""\$B->(forward|forward_with_snat)\(\s*(\d{1,5})\s*(?:=>|,)\s*['"]([0-9.]+)(?::(\d{1,5}))?['"]"""
    r"""((?:\s*,\s*['"](?:tcp|udp)['"])*)\s*\)\s*;?$""")
_ADD_ROUTE = re.compile(
    r"""\$B->add_route\(\s*['"]([0-9./]+)['"]\s*(?:=>|,)\s*['"]([A-Za-z0-9_.+-]{1,15})['"]"""
    r"""\s*(?:,\s*(\w+)\s*)?\)\s*;?$""")
_CHAINS = {"INPUT": "input", "FORWARD": "forward"}
_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject"}


@dataclass
class Migration:
    port_forwards: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    nft: list[str] = field(default_factory=list)  # rules for a snippet
    report: list[str] = field(default_factory=list)


def _statements(path: Path) -> list[tuple[int, str]]:
    """(first line, statement) without comments; a Perl statement runs to its `;`."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return [(0, f"unreadable: {exc.strerror}")]
    perl = path.suffix == ".pl"
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines()[:10_000], start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = (pending[0], f"{pending[1]} {line}") if pending is not None else (number, line)
        if not perl or line.endswith((";", "}")):
            out.append(pending)
            pending = None
    if pending is not None:
        out.append(pending)
    return out


def _port(text: str) -> int | None:
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    return PORTS.get(text)


def iptables_to_nft(line: str, table: str) -> str | None:
    """An nft rule for a simple `iptables -A|-I INPUT|FORWARD ...` line; None when
    a translation would not be exact."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if not words or words[0] != "iptables":
        return None
    words = words[1:]
    if words[:2] == ["-t", "filter"]:
        words = words[2:]
    if len(words) < 2 or words[0] not in ("-A", "-I") or words[1] not in _CHAINS:
        return None
    verb = "add" if words[0] == "-A" else "insert"
    chain = _CHAINS[words[1]]
    match: list[str] = []
    proto = ""
    verdict = None
    i = 2
    while i < len(words):
        opt = words[i]
        arg = words[i + 1] if i + 1 < len(words) else None
        if opt == "--syn" and proto == "tcp":
            match.append("tcp flags syn / fin,syn,rst,ack")
            i += 1
            continue
        if arg is None or arg.startswith("-"):
            return None
        if opt in ("-i", "-o") and re.fullmatch(r"[A-Za-z0-9_.+-]{1,15}", arg):
            match.append(f'{"iifname" if opt == "-i" else "oifname"} "{arg}"')
        elif opt == "-p" and arg in ("tcp", "udp", "icmp") and not proto:
            proto = arg
            if arg == "icmp":
                match.append("meta l4proto icmp")
        elif opt in ("-s", "-d"):
            try:
                net = ip_network(arg, strict=False)
            except ValueError:
                return None
            if net.version != 4:
                return None
            match.append(f"ip {'saddr' if opt == '-s' else 'daddr'} {net}")
        elif opt in ("--dport", "--destination-port", "--sport", "--source-port") and proto in (
                "tcp", "udp") and (port := _port(arg)) is not None:
            match.append(f"{proto} {'dport' if 'd' in opt[2:4] else 'sport'} {port}")
        elif opt == "-j" and arg in _VERDICTS and verdict is None:
            verdict = _VERDICTS[arg]
        else:
            return None
        i += 2
    if verdict is None:
        return None
    if proto in ("tcp", "udp") and not any(m.startswith(proto) for m in match):
        match.append(f"meta l4proto {proto}")
    return f"{verb} rule inet {table} {chain} {' '.join(match)} {verdict}".replace("  ", " ")


def _perl_iptables(line: str) -> str:
    """`$B->iptables('-A INPUT ...');` (one literal string) as the iptables line it runs."""
    m = re.fullmatch(r"""\$B->iptables\(\s*(['"])([^'"$@]*)\1\s*\)\s*;?""", line)
    return f"iptables {m.group(2)}" if m else line


def _port_forward(m: re.Match[str]) -> list[dict[str, Any]]:
    how, port, host, to_port, protos = m.groups()
    out = []
    for proto in re.findall(r"tcp|udp", protos or "") or ["tcp"]:
        entry: dict[str, Any] = {"proto": proto, "port": int(port), "to": host}
        if to_port and int(to_port) != int(port):
            entry["to_port"] = int(to_port)
        if how == "forward_with_snat":
            entry["hairpin"] = True
        out.append(entry)
    return out


def _route(line: str) -> dict[str, Any] | None:
    """`ip route add NET dev DEV [via GW]` (no other options: those would be lost)."""
    words = line.split()
    if words[:3] not in (["ip", "route", "add"], ["/sbin/ip", "route", "add"]) or len(words) < 6:
        return None
    route: dict[str, Any] = {"to": words[3]}
    rest = words[4:]
    if len(rest) % 2:
        return None
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        if key == "dev":
            route["interface"] = value
        elif key == "via":
            route["via"] = value
        else:
            return None
    if "interface" not in route:
        return None
    if "/" not in route["to"]:
        route["to"] += "/32"
    return route


def _valid(model: type[BaseModel], entries: list[dict[str, Any]], where: str, line: str,
           note: Any) -> bool:
    """Whether the entries are what the config takes; if not, the line is listed."""
    for entry in entries:
        try:
            model.model_validate(entry)
        except ValidationError as exc:
            why = str(exc.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")
            note(f"{where}: NOT carried over ({why}), do it by hand: {line}")
            return False
    return True


def migrate(folder: Path, config: Config) -> Migration:
    """What becomes of each file in Net-ISP-Balance's `balance/` folder."""
    out = Migration()
    table = config.kernel.table
    if not folder.is_dir():
        return out
    for sub in FOLDERS:
        for path in sorted((folder / sub).glob("*")) if (folder / sub).is_dir() else []:
            if path.is_file():
                _file(out, sub, path, table)
    return out


def _file(out: Migration, sub: str, path: Path, table: str) -> None:
    lines = _statements(path)
    note = out.report.append
    if not lines:
        note(f"{path}: nothing to carry over (comments only)")
        return
    if sub in ("pre-run", "post-run"):
        event = "pre-apply" if sub == "pre-run" else "post-apply"
        note(f"{path}: a {sub} script: install it as /etc/nmbalance/hooks.d/{event}/{path.name} "
             f"(executable, owned by root); it runs before/after every apply, under `apply` "
             f"and the daemon. It must not flush or rewrite nmbalance's table, routes or rules")
        return
    if sub == "lsm":
        note(f"{path}: an lsm event script: install it in /etc/nmbalance/hooks.d/up/, down/ "
             f"or long-down/; it gets UPLINK, STATE, PREVIOUS_STATE, INTERFACE, GATEWAY "
             f"in its environment instead of lsm's arguments")
        return
    for number, line in lines:
        where = f"{path}:{number}"
        if m := _FORWARD.fullmatch(line):
            entries = _port_forward(m)
            if _valid(PortForward, entries, where, line, note):
                out.port_forwards += entries
                note(f"{where}: became {len(entries)} [[port_forward]]")
        elif m := _ADD_ROUTE.fullmatch(line):
            added: dict[str, Any] = {
                "to": m.group(1) if "/" in m.group(1) else m.group(1) + "/32",
                "interface": m.group(2)}
            if _valid(StaticRoute, [added], where, line, note):
                out.routes.append(added)
                extra = ("; its masquerade flag was not carried over: add a snippet rule "
                         f"`add rule inet {table} postrouting oifname \"{m.group(2)}\" "
                         "masquerade`" if m.group(3) and m.group(3) not in ("0", "undef") else "")
                note(f"{where}: became a [[route]]{extra}")
        elif sub == "routes" and (route := _route(line)) is not None:
            if _valid(StaticRoute, [route], where, line, note):
                out.routes.append(route)
                note(f"{where}: became a [[route]]")
        elif covered := next((why for pattern, why in _COVERED if pattern.search(line)), None):
            note(f"{where}: not needed: {covered}")
        elif (rule := iptables_to_nft(_perl_iptables(line), table)) is not None:
            out.nft.append(rule)
            note(f"{where}: became the nft rule `{rule}`")
        else:
            note(f"{where}: NOT carried over, do it by hand: {line}")
