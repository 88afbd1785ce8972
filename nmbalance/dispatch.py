"""What the dispatcher scripts run: ask the daemon to refresh, or apply once
when no daemon runs. Logs to the journal/syslog; never fails the caller."""

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
    if not _EVENT.match(event) or (interface and validate.ifname(interface) is None):
        log.warning("ignoring a malformed event %r on %r", event[:40], interface[:40])
        return "ignored"
    reason = f"{event} {interface}".strip()
    from nmbalance.bus.query import daemon_refresh

    if daemon_refresh(reason):
        log.info("%s: asked the running daemon to refresh", reason)
        return "refreshed"
    try:
        from nmbalance.config.load import load_config
        from nmbalance.dataplane.apply import apply_plan
        from nmbalance.oneshot import plan_once

        config = load_config(config_path)
        plan = plan_once(config)
        apply_plan(plan, flush_conntrack=config.kernel.flush_conntrack)
    except Exception as exc:  # the network manager's event must go on whatever happens here
        log.error("%s: nmbalance apply failed: %s", reason, exc)
        return "failed"
    log.info("%s: no daemon running; applied: %s", reason, ", ".join(
        f"{u.name} {u.status.value}" for u in plan.uplinks))
    return "applied"
