"""What the dispatcher scripts run: ask the daemon to refresh, or apply once
when no daemon runs. Logs to the journal/syslog; never fails the caller.

A live daemon (nmbalance.presence) is never overridden: its plan has the
probes' verdicts, a one-shot plan does not. So with a daemon alive the
dispatcher only asks it to refresh, and a slow or missing answer on the bus
changes nothing.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re

from nmbalance.sources import validate

log = logging.getLogger("nmbalance.dispatch")
_EVENT = re.compile(r"^[a-z0-9-]{1,32}$")


def _to_syslog() -> None:
    handler: logging.Handler = (logging.handlers.SysLogHandler("/dev/log")
                                if os.path.exists("/dev/log") else logging.StreamHandler())
    handler.setFormatter(logging.Formatter("nmbalance-dispatch: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def dispatch(event: str, interface: str, config_path: str) -> str:
    """Returns what was done: "refreshed", "applied", "ignored" or "failed"."""
    _to_syslog()
    if not _EVENT.fullmatch(event) or (interface and validate.ifname(interface) is None):
        log.warning("ignoring a malformed event %r on %r", event[:40], interface[:40])
        return "ignored"
    reason = f"{event} {interface}".strip()
    from nmbalance.bus.query import daemon_refresh
    from nmbalance.presence import running_daemon

    pid = running_daemon()
    if pid is not None:
        if daemon_refresh(reason):
            log.info("%s: asked the running daemon to refresh", reason)
        else:
            log.info("%s: the daemon%s did not take a refresh over D-Bus; it follows the "
                     "kernel's events itself, so nothing is applied here", reason,
                     f" (pid {pid})" if pid else "")
        return "refreshed"
    try:
        from nmbalance.config.load import load_config
        from nmbalance.oneshot import plan_and_apply

        config = load_config(config_path)
        plan, _ = plan_and_apply(config, config_path=config_path)
    except Exception as exc:  # the network manager's event must go on whatever happens here
        log.error("%s: nmbalance apply failed: %s", reason, exc)
        return "failed"
    log.info("%s: no daemon running; applied: %s", reason, ", ".join(
        f"{u.name} {u.status.value}" for u in plan.uplinks))
    return "applied"
