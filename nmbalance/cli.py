"""The `nmbalance` command (contract: DESIGN.md "Command line")."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nmbalance import __version__
from nmbalance.config.load import DEFAULT_PATH, LEGACY_PATHS, default_path, load, load_config
from nmbalance.config.model import Config
from nmbalance.errors import NmbalanceError

log = logging.getLogger("nmbalance")


# What the shipped dispatcher scripts pass; any other word is taken the same way.
DISPATCH_EVENTS = tuple(f"nm-{e}" for e in (
    "up", "down", "dhcp4-change", "dhcp6-change", "connectivity-change", "reapply", "vpn-up",
    "vpn-down")) + tuple(f"networkd-{s}" for s in (
        "routable", "degraded", "carrier", "no-carrier", "off", "configured"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nmbalance", description="Balance new connections over several uplinks and "
        "move them off an uplink that fails (see nmbalance(8)).")
    p.add_argument("--version", action="version", version=f"nmbalance {__version__}")
    # -v/-q before or after the subcommand: the subcommand's copy must not reset
    # what was given before it, hence SUPPRESS there.
    for parser, default in ((p, False), (common := argparse.ArgumentParser(add_help=False),
                                         argparse.SUPPRESS)):
        parser.add_argument("-v", "--verbose", action="store_true", default=default,
                            help="say what is done (run: also every event behind a change)")
        parser.add_argument("-q", "--quiet", action="store_true", default=default,
                            help="only errors (no warnings)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    default = os.environ.get("NMBALANCE_CONFIG") or default_path()

    def command(name: str, summary: str, config: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=summary, description=summary[:1].upper() + summary[1:]
                            + ".", parents=[common])
        if config:
            sp.add_argument("-c", "--config", default=default, metavar="FILE",
                            help=f"the config (default $NMBALANCE_CONFIG, else {DEFAULT_PATH}, "
                                 f"else Net-ISP-Balance's {' or '.join(LEGACY_PATHS)})")
        return sp

    command("run", "the daemon: probe, follow events, keep the kernel in step")
    sp = command("apply", "discover, decide and apply once (no daemon)")
    sp.add_argument("--dry-run", action="store_true",
                    help="print the plan (nft ruleset, routes, rules), change nothing")
    sp.add_argument("uplinks", nargs="*", metavar="UPLINK", help="use only these uplinks")
    command("check", "validate the config; exit 0, or 2 with every error")
    sp = command("convert", "a Net-ISP-Balance balance.conf as TOML, on stdout", config=False)
    sp.add_argument("balance_conf", metavar="BALANCE_CONF",
                    help="the balance.conf; its balance/ folder is read too")
    sp.add_argument("--snippet", metavar="FILE",
                    help="write the nft rules translated from balance/firewall/ here")
    command("flush", "remove everything nmbalance installed (no daemon)")
    sp = command("dispatch", "for dispatcher scripts: refresh the daemon, else apply once")
    sp.add_argument("event", metavar="EVENT",
                    help="what happened: " + ", ".join(DISPATCH_EVENTS) + "; every event "
                         "refreshes the daemon, or applies once when none runs")
    sp.add_argument("interface", nargs="?", default="", metavar="INTERFACE",
                    help="the interface it happened to")
    sp = command("status", "what each uplink is doing: from the daemon, else the kernel")
    sp.add_argument("--json", action="store_true",
                    help="one JSON document (schema nmbalance-status, version 1)")
    sp.add_argument("--watch", action="store_true",
                    help="redraw every second (Ctrl-C to stop); one line per change when "
                         "not on a terminal")
    sp = command("explain", "which rule, method and uplink a new connection gets, and why")
    sp.add_argument("--dst", required=True, metavar="ADDR", help="its destination address")
    sp.add_argument("--src", metavar="ADDR", help="its source address (a LAN host's)")
    sp.add_argument("--proto", choices=("tcp", "udp", "sctp", "icmp", "icmpv6"), help="its protocol")
    sp.add_argument("--sport", type=int, metavar="N", help="its source port")
    sp.add_argument("--dport", type=int, metavar="N", help="its destination port")
    sp.add_argument("--iif", metavar="IF",
                    help="the interface it arrives on (default: forwarded from a LAN)")
    sp.add_argument("--json", action="store_true", help="the answer as JSON")
    sp = command("connections", "the tracked connections, grouped by uplink")
    sp.add_argument("--json", action="store_true", help="as JSON")
    sp = command("doctor", "test the setup, per uplink, without unplugging anything; "
                           "exit 1 on a failure")
    sp.add_argument("--json", action="store_true", help="the findings as JSON")
    for verb, what in (("enable", "take an uplink back into rotation"),
                       ("disable", "leave an uplink out (its flows stay)")):
        sp = command(verb, f"{what} in the running daemon", config=False)
        sp.add_argument("uplink", metavar="UPLINK", help="the uplink's name")
    command("metrics", "the running daemon's metrics, as OpenMetrics text", config=False)
    return p


def _no_daemon(what: str) -> None:
    """A running daemon keeps the kernel as it decides: a one-shot change would be undone."""
    from nmbalance.presence import running_daemon

    pid = running_daemon()
    if pid is not None:
        raise NmbalanceError(
            f"a daemon runs here{f' (pid {pid})' if pid else ''} and keeps the kernel as it "
            f"decides, so {what} would be undone: reload it (systemctl reload nmbalance), "
            "steer it over D-Bus (SetUplinkEnabled), or stop it first")


def cmd_apply(args: argparse.Namespace) -> int:
    from nmbalance.core.plan import UplinkStatus
    from nmbalance.oneshot import plan_and_apply

    config = load_config(args.config)
    if not args.dry_run:
        _no_daemon("`apply`")
    plan, report = plan_and_apply(config, args.uplinks, dry_run=args.dry_run,
                                  config_path=args.config)
    if report is None:
        sys.stdout.write(plan.describe())
        return 0
    for u in plan.uplinks:
        print(f"{u.name}: {u.status.value}{' (' + u.reason + ')' if u.reason else ''}"
              f"{f', share {u.share:.0%}' if u.share else ''}")
    log.info("nft %s apply; routing +%d -%d; conntrack entries of %d uplinks dropped",
             report.nft_mode or "no", len(report.routing.added), len(report.routing.removed),
             len(report.conntrack_flushed))
    if not plan.live_marks:
        print("nmbalance: no uplink can take traffic: new connections leave by the system's "
              "own routes (see the states above)", file=sys.stderr)
        return 1
    # The rest is in place; what the kernel refused is a failure to report.
    return 1 if any(u.status is UplinkStatus.ERROR for u in plan.uplinks) else 0


def cmd_run(args: argparse.Namespace) -> int:
    from nmbalance.daemon import run

    return run(args.config)


def cmd_check(args: argparse.Namespace) -> int:
    from nmbalance.config.legacy import looks_legacy

    loaded = load(args.config)
    config = loaded.config
    for warning in () if args.quiet else (*loaded.warnings, *_check_warnings(config)):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config}: OK ({_count(config.uplink, 'uplink')}, {_count(config.lan, 'LAN')}, "
          f"{_count(config.rule, 'rule')}, mode {config.mode}"
          f"{', ipv6 ' + config.ipv6 if config.ipv6 != 'off' else ''}"
          f"{', firewall restrictive' if config.firewall.restrictive else ''})")
    if Path(args.config).is_file() and looks_legacy(Path(args.config).read_text(errors="replace")):
        print("  read as Net-ISP-Balance's balance.conf (`nmbalance convert` writes it as TOML)")
    for u in config.uplink:
        if config.ipv6 == "npt":
            print(f"  {u.name}: IPv6 " + (f"npt into {u.prefix6}" if u.prefix6 else
                                         "masqueraded (no prefix6)"))
        elif config.ipv6 == "prefix":
            print(f"  {u.name}: IPv6 " + (f"prefix {u.prefix6}, a /64 of it per LAN"
                                         if u.prefix6 else "not for the LANs (no prefix6)"))
        if u.probe:  # as written: names are resolved by the daemon, through the uplink
            print(f"  {u.name}: probes {', '.join(_target(t) for t in u.probe)}")
        elif not args.quiet:
            print(f"warning: uplink {u.name} has no probe targets; "
                  "it is judged by carrier and lease alone", file=sys.stderr)
    return 0


def _count(items: Sequence[object], what: str) -> str:
    return f"{len(items)} {what}{'' if len(items) == 1 else 's'}"


def _check_warnings(config: Config) -> list[str]:
    """What loads but is likely a mistake: rule names given twice, interfaces
    this machine does not have (yet: a USB modem may come later)."""
    out = []
    seen: set[str] = set()
    for rule in config.rule:
        if rule.name in seen:
            out.append(f"rule name {rule.name!r} is used twice: logs and explain cannot tell "
                       "them apart")
        seen.add(rule.name)
    present = set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else None
    if present is not None:
        wanted = [(f"uplink {u.name}", u.interface) for u in config.uplink if u.interface] + [
            (f"LAN {lan.name}", lan.device) for lan in config.lan]
        out += [f"{who}: interface {dev} does not exist here (now)" for who, dev in wanted
                if dev not in present]
    return out


def _target(target: object) -> str:
    from nmbalance.config.values import GATEWAY_TARGET

    if target == GATEWAY_TARGET:
        return "its gateway"
    if isinstance(target, str):
        return f"{target} (resolved through the uplink's DNS at run time)"
    return str(target)


def cmd_convert(args: argparse.Namespace) -> int:
    """The TOML on stdout; on stderr, what became of each customisation of a
    Net-ISP-Balance installation (its balance/ folder next to the file)."""
    from nmbalance.config.convert import to_toml
    from nmbalance.config.load import load_text
    from nmbalance.config.migrate import migrate

    loaded = load(args.balance_conf)
    for warning in () if args.quiet else loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    folder = Path(args.balance_conf).parent / "balance"
    moved = migrate(folder, loaded.config)
    text = to_toml(loaded.config, f"converted from {args.balance_conf} by nmbalance convert",
                   {"port_forward": moved.port_forwards, "route": moved.routes})
    load_text(text, f"{args.balance_conf} converted")  # what we print must load back
    sys.stdout.write(text)
    if moved.report:
        print(f"{folder}:", file=sys.stderr)
        for line in moved.report:
            print(f"  {line}", file=sys.stderr)
    if moved.nft:
        rules = "".join(f"{rule}\n" for rule in moved.nft)
        if args.snippet:
            Path(args.snippet).write_text(f"# from {folder} by nmbalance convert\n{rules}")
            print(f"nft rules written to {args.snippet}", file=sys.stderr)
        else:
            print("nft rules for a snippet (save them in /etc/nmbalance/nft.d/, or pass "
                  f"--snippet FILE):\n{rules}", end="", file=sys.stderr)
    return 0


def _config_or_none(path: str) -> Config | None:
    """The config; None when none was asked for and the default ones are missing."""
    if path in (DEFAULT_PATH, *LEGACY_PATHS) and not Path(path).exists():
        return None
    return load_config(path)


def cmd_flush(args: argparse.Namespace) -> int:
    from pyroute2 import IPRoute

    from nmbalance.config.model import KernelSettings
    from nmbalance.dataplane.apply import flush

    config = _config_or_none(args.config)
    kernel = config.kernel if config is not None else KernelSettings()
    _no_daemon("`flush`")
    with IPRoute(strict_check=True) as ipr:
        removed, changes = flush(ipr, kernel.table, kernel.route_protocol)
    print(f"table inet {kernel.table}: {'removed' if removed else 'not present'}; "
          f"{len(changes.removed)} routes/rules removed")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from nmbalance.report.render import render
    from nmbalance.report.status import gather

    config = _config_or_none(args.config)
    if args.watch:
        from nmbalance.report.watch import watch

        return watch(lambda: gather(config), sys.stdout)
    return _show(gather(config), args.json, render)


def cmd_explain(args: argparse.Namespace) -> int:
    from nmbalance.report.explain import connection, explain_now

    config = load_config(args.config)
    asked = connection(args.dst, args.src, args.proto, args.sport, args.dport, args.iif)
    found = explain_now(config, asked)
    if args.json:
        print(json.dumps(found.as_dict(), indent=2, sort_keys=True))
    else:
        what = " ".join(f"{k} {v}" for k, v in (
            ("from", args.src), ("to", args.dst), ("proto", args.proto), ("sport", args.sport),
            ("dport", args.dport), ("in on", args.iif)) if v is not None)
        sys.stdout.write(f"a new connection {what}:\n{found.describe()}")
    return 0


def cmd_connections(args: argparse.Namespace) -> int:
    from nmbalance.config.model import KernelSettings
    from nmbalance.report.connections import grouped, read_flows, render
    from nmbalance.report.status import gather

    config = _config_or_none(args.config)
    status = gather(config)
    marks = {u["name"]: u["mark"] for u in status["uplinks"] if u["mark"]}
    report = grouped(read_flows(), marks, config.kernel if config else KernelSettings())
    return _show(report, args.json, render)


def _show(document: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]
          ) -> int:
    """A report as JSON, or as its text for people."""
    if as_json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render(document))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from nmbalance.report.doctor import FAIL, doctor

    found = doctor(load_config(args.config))
    if args.json:
        print(json.dumps([asdict(c) for c in found], indent=2))
    else:
        for check in found:
            print(check.line())
    failed = [c for c in found if c.verdict == FAIL]
    if not args.json:
        print(f"{len(failed)} failed, {sum(c.verdict == 'warn' for c in found)} warnings, "
              f"{sum(c.verdict == 'pass' for c in found)} passed")
    return 1 if failed else 0


def cmd_steer(args: argparse.Namespace) -> int:
    from nmbalance.bus.query import set_uplink_enabled

    enabled = args.command == "enable"
    set_uplink_enabled(args.uplink, enabled)
    print(f"{args.uplink}: {'enabled' if enabled else 'disabled (left out; its flows stay)'}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from nmbalance.bus.query import daemon_metrics

    sys.stdout.write(daemon_metrics())
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    """For the dispatcher scripts: poke the daemon, else apply once. Always exit 0:
    a dispatcher must never fail the network manager's event."""
    from nmbalance.dispatch import dispatch

    dispatch(args.event, args.interface, args.config)
    return 0


COMMANDS = {
    "run": cmd_run, "apply": cmd_apply, "check": cmd_check, "convert": cmd_convert,
    "flush": cmd_flush, "status": cmd_status, "dispatch": cmd_dispatch,
    "explain": cmd_explain, "connections": cmd_connections, "doctor": cmd_doctor,
    "enable": cmd_steer, "disable": cmd_steer, "metrics": cmd_metrics,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help/--version
        return int(exc.code or 0)
    # The daemon tells its story at INFO (state changes, applies, repairs); -v adds
    # the events behind them. The one-shot commands say only what went wrong.
    daemon = args.command == "run"
    level = logging.INFO if daemon or args.verbose else logging.WARNING
    logging.basicConfig(level=logging.ERROR if args.quiet else level,
                        format="nmbalance: %(message)s")
    if daemon and args.verbose:
        logging.getLogger("nmbalance").setLevel(logging.DEBUG)
    try:
        return COMMANDS[args.command](args)
    except NmbalanceError as exc:
        print(f"nmbalance: {exc}" if "\n" not in str(exc) else f"nmbalance: {exc}".replace(
            "\n", "\nnmbalance: "), file=sys.stderr)
        return exc.exit_code
    except PermissionError as exc:
        print(f"nmbalance: permission denied ({exc}); run as root", file=sys.stderr)
        return 1
