"""`nmbalance explain`: where a new connection would go now, read from what
is applied (the kernel's weight maps and sticky sets, the daemon's states)
and explained by core.explain."""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Address, ip_address

from nmbalance.config.model import IFNAME_PATTERN, Config
from nmbalance.core.explain import Explanation, explain
from nmbalance.core.matching import Connection
from nmbalance.errors import UsageError


def connection(dst: str, src: str | None, proto: str | None, sport: int | None,
               dport: int | None, iif: str | None) -> Connection | None:
    """The connection asked about; None for IPv6 (not balanced yet)."""
    def addr(text: str, what: str) -> IPv4Address | None:
        try:
            parsed = ip_address(text)
        except ValueError:
            raise UsageError(f"--{what}: {text!r} is not an IP address") from None
        return parsed if isinstance(parsed, IPv4Address) else None

    target = addr(dst, "dst")
    if target is None:
        return None
    source = addr(src, "src") if src else None
    if src and source is None:
        raise UsageError("--src is IPv6 and --dst IPv4: one connection has one family")
    for what, port in (("sport", sport), ("dport", dport)):
        if port is not None and not 1 <= port <= 65535:
            raise UsageError(f"--{what} {port}: ports are 1-65535")
        if port is not None and proto not in ("tcp", "udp", "sctp"):
            raise UsageError(f"--{what} needs --proto tcp, udp or sctp")
    if iif is not None and not re.fullmatch(IFNAME_PATTERN, iif):
        raise UsageError(f"--iif {iif!r} is not an interface name")
    return Connection(target, source, proto, sport, dport, iif)


IPV6 = Explanation(("IPv6 with ipv6 = \"off\": the system's routes decide",),
                   balanced=False)


def explain_now(config: Config, c: Connection | None) -> Explanation:
    from nmbalance.bus.query import daemon_status
    from nmbalance.dataplane.nft import NftTable
    from nmbalance.oneshot import observe

    if c is None and config.ipv6 == "off":
        return IPV6
    _, plan = observe(config)
    if c is None:
        # The daemon's shares where one runs: they follow its IPv6 probes.
        running = daemon_status()
        shares = ({u.get("Name", ""): float(u.get("Share6", 0.0)) for u in running["uplinks"]}
                  if running else {u.name: u.share6 for u in plan.uplinks})
        return Explanation(
            (f"IPv6 under ipv6 = \"{config.ipv6}\": the global mode's IPv6 shares, "
             + ("the daemon's" if running else "from the uplinks as found now (no daemon)")
             + "; explain walks rules and bypasses for IPv4 only so far",),
            distribution={name: share for name, share in shares.items() if share > 0})
    state = NftTable(config.kernel.table).read()
    applied = state is not None and state.digest == plan.nft.digest
    answer = daemon_status()
    states = {u.get("Name", ""): (u.get("State", ""), u.get("Reason", ""))
              for u in answer["uplinks"]} if answer else None
    sticky = state.sticky if applied and state else {}
    found = explain(config, plan, c, weights=state.weights if applied and state else None,
                    pinned=lambda name, key: any(e.key == key for e in sticky.get(name, ())),
                    states=states)
    if state is not None and not applied:
        found = replace(found, steps=(*found.steps, f"(table inet {config.kernel.table} holds "
                                      "another config's rules: this is what this config would do)"))
    return found
