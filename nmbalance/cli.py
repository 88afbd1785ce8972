"""The `nmbalance` command (contract: DESIGN.md "Command line")."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nmbalance import __version__
from nmbalance.config.load import DEFAULT_PATH, LEGACY_PATHS, default_path, load, load_config
from nmbalance.config.model import Config
from nmbalance.errors import NmbalanceError

log = logging.getLogger("nmbalance")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nmbalance", description=__doc__)
    p.add_argument("--version", action="version", version=f"nmbalance {__version__}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log what is done (run: also every event behind a change)")
    sub = p.add_subparsers(dest="command", required=True)

    default = os.environ.get("NMBALANCE_CONFIG") or default_path()

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", default=default,
                        help=f"default $NMBALANCE_CONFIG, else {DEFAULT_PATH}, else "
                             f"Net-ISP-Balance's {' or '.join(LEGACY_PATHS)}")

    sp = sub.add_parser("run", help="the daemon: probe, follow events, keep the kernel in step")
    with_config(sp)
    sp = sub.add_parser("apply", help="discover, decide and apply once")
    with_config(sp)
    sp.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sp.add_argument("uplinks", nargs="*", metavar="UPLINK", help="use only these uplinks")
    sp = sub.add_parser("check", help="validate the config")
    with_config(sp)
    sp = sub.add_parser("convert", help="balance.conf -> TOML on stdout")
    sp.add_argument("balance_conf")
    sp.add_argument("--snippet", metavar="FILE",
                    help="write the nft rules translated from balance/firewall/ here")
    sp = sub.add_parser("flush", help="remove everything nmbalance installed")
    with_config(sp)
    sp = sub.add_parser("dispatch", help="for dispatcher scripts: refresh the daemon or apply")
    with_config(sp)
    sp.add_argument("event")
    sp.add_argument("interface", nargs="?", default="")
    sp = sub.add_parser("status", help="what is balanced where")
    with_config(sp)
    sp.add_argument("--json", action="store_true")
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
    # The rest is in place; what the kernel refused is a failure to report.
    return 1 if any(u.status is UplinkStatus.ERROR for u in plan.uplinks) else 0


def cmd_run(args: argparse.Namespace) -> int:
    from nmbalance.daemon import run

    return run(args.config)


def cmd_check(args: argparse.Namespace) -> int:
    from nmbalance.config.legacy import looks_legacy

    loaded = load(args.config)
    config = loaded.config
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config}: OK ({len(config.uplink)} uplinks, {len(config.lan)} LANs, "
          f"{len(config.rule)} rules, mode {config.mode}"
          f"{', firewall restrictive' if config.firewall.restrictive else ''})")
    if Path(args.config).is_file() and looks_legacy(Path(args.config).read_text(errors="replace")):
        print("  read as Net-ISP-Balance's balance.conf (`nmbalance convert` writes it as TOML)")
    for u in config.uplink:
        if u.probe:  # as written: names are resolved by the daemon, through the uplink
            print(f"  {u.name}: probes {', '.join(_target(t) for t in u.probe)}")
        else:
            print(f"warning: uplink {u.name} has no probe targets; "
                  "it is judged by carrier and lease alone", file=sys.stderr)
    return 0


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
    for warning in loaded.warnings:
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


def _config_or_defaults(path: str) -> Config:
    if path == DEFAULT_PATH and not Path(path).exists():
        return Config.model_validate({"uplink": [{"name": "none", "interface": "none"}]})
    return load_config(path)


def cmd_flush(args: argparse.Namespace) -> int:
    from pyroute2 import IPRoute

    from nmbalance.dataplane.apply import flush

    config = _config_or_defaults(args.config)
    _no_daemon("`flush`")
    with IPRoute(strict_check=True) as ipr:
        removed, changes = flush(ipr, config.kernel.table, config.kernel.route_protocol)
    print(f"table inet {config.kernel.table}: {'removed' if removed else 'not present'}; "
          f"{len(changes.removed)} routes/rules removed")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from nmbalance.bus.query import daemon_status, render_daemon_status

    status = daemon_status()
    if status is not None:
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True))
        else:
            sys.stdout.write(render_daemon_status(status))
        return 0
    from nmbalance.status import kernel_status, render_status

    config = _config_or_defaults(args.config)
    status = kernel_status(config)
    if args.json:
        print(json.dumps({"source": "kernel", **status}, indent=2, sort_keys=True))
    else:
        sys.stdout.write("(no daemon running: read from the kernel)\n" + render_status(status))
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
    logging.basicConfig(level=logging.INFO if daemon or args.verbose else logging.WARNING,
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
