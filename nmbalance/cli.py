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
from nmbalance.config.load import DEFAULT_PATH, load_config
from nmbalance.config.model import Config
from nmbalance.errors import NmbalanceError

log = logging.getLogger("nmbalance")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nmbalance", description=__doc__)
    p.add_argument("--version", action="version", version=f"nmbalance {__version__}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log what is done (run: also every event behind a change)")
    sub = p.add_subparsers(dest="command", required=True)

    default = os.environ.get("NMBALANCE_CONFIG") or DEFAULT_PATH

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", default=default,
                        help=f"default {DEFAULT_PATH}, or $NMBALANCE_CONFIG")

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
    plan, report = plan_and_apply(config, args.uplinks, dry_run=args.dry_run)
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
    config = load_config(args.config)
    print(f"{args.config}: OK ({len(config.uplink)} uplinks, {len(config.lan)} LANs, "
          f"{len(config.rule)} rules, mode {config.mode})")
    for u in config.uplink:
        if not u.probe:
            print(f"warning: uplink {u.name} has no probe targets; "
                  "it is judged by carrier and lease alone", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from nmbalance.config.convert import to_toml

    config = load_config(args.balance_conf)
    sys.stdout.write(to_toml(config, f"converted from {args.balance_conf} by nmbalance convert"))
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
