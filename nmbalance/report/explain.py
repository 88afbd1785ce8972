"""`nmbalance explain`: where a new connection would go now, read from what
is applied (the kernel's weight maps and sticky sets, the daemon's states)
and explained by core.explain."""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import ip_address

from nmbalance.config.model import IFNAME_PATTERN, Config
from nmbalance.core.explain import Explanation, explain
from nmbalance.core.matching import Connection
from nmbalance.errors import UsageError
from nmbalance.inet import AnyAddress


def connection(dst: str, src: str | None, proto: str | None, sport: int | None,
               dport: int | None, iif: str | None) -> Connection:
    """The connection asked about, IPv4 or IPv6."""
    def addr(text: str, what: str) -> AnyAddress:
        try:
            parsed = ip_address(text)
        except ValueError:
            raise UsageError(f"--{what}: {text!r} is not an IP address") from None
        if parsed.version == 6 and parsed.scope_id:
            raise UsageError(f"--{what}: {text!r} has a scope id: give the address alone")
        return parsed

    target = addr(dst, "dst")
    source = addr(src, "src") if src else None
    if source is not None and source.version != target.version:
        raise UsageError("--src and --dst are of different families: one connection has one")
    if proto in ("icmp", "icmpv6") and proto != ("icmp" if target.version == 4 else "icmpv6"):
        raise UsageError(f"--proto {proto} does not go to an IPv{target.version} address")
    for what, port in (("sport", sport), ("dport", dport)):
        if port is not None and not 1 <= port <= 65535:
            raise UsageError(f"--{what} {port}: ports are 1-65535")
        if port is not None and proto not in ("tcp", "udp", "sctp"):
            raise UsageError(f"--{what} needs --proto tcp, udp or sctp")
    if iif is not None and not re.fullmatch(IFNAME_PATTERN, iif):
        raise UsageError(f"--iif {iif!r} is not an interface name")
    return Connection(target, source, proto, sport, dport, iif)


def explain_now(config: Config, c: Connection) -> Explanation:
    from nmbalance.bus.query import daemon_status
    from nmbalance.dataplane.nft import NftTable
    from nmbalance.oneshot import observe

    _, plan = observe(config)
    state = NftTable(config.kernel.table).read()
    applied = state is not None and state.digest == plan.nft.digest
    answer = daemon_status()
    # The daemon's states, of the connection's family: they follow its probes.
    state_key, reason_key = ("State6", "Reason6") if c.dst.version == 6 else ("State", "Reason")
    states = {u.get("Name", ""): (u.get(state_key, ""), u.get(reason_key, ""))
              for u in answer["uplinks"]} if answer else None
    sticky = state.sticky if applied and state else {}
    found = explain(config, plan, c, weights=state.weights if applied and state else None,
                    pinned=lambda name, key: any(e.key == key for e in sticky.get(name, ())),
                    states=states)
    if state is not None and not applied:
        found = replace(found, steps=(*found.steps, f"(table inet {config.kernel.table} holds "
                                      "another config's rules: this is what this config would do)"))
    return found
