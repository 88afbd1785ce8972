"""Reconcile our routes and ip rules with the kernel.

Ownership is read from the kernel: only entries carrying our routing
protocol number are ever changed or removed. Everything else, even inside our
table or priority range, is left exactly as it is.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nmbalance.core.plan import Route, RoutingRule
from nmbalance.errors import ApplyError

FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
RTN_UNICAST = 1
RTN_UNREACHABLE = 7
KIND = {RTN_UNICAST: "unicast", RTN_UNREACHABLE: "unreachable"}


@dataclass(frozen=True)
class RoutingChanges:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    # What the kernel refused (a gateway no longer on-link, say); everything else
    # was still done, so one uplink's trouble never holds up the others.
    failed: tuple[str, ...] = ()


def _ifname(index: int | None) -> str | None:
    if not index:
        return None
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"  # vanished since the dump


def owned_routes(ipr: IPRoute, proto: int) -> set[Route]:
    out = set()
    for version, family in FAMILY.items():
        # With strict checking the kernel filters the dump by protocol; the
        # check below keeps us right on kernels that ignore the filter.
        for m in ipr.route("dump", family=family, proto=proto):
            if m["proto"] != proto:
                continue
            zero = "0.0.0.0" if version == 4 else "::"
            oif = m.get_attr("RTA_OIF")
            out.add(Route(
                table=int(m.get_attr("RTA_TABLE") or m["table"]),
                dst=f"{m.get_attr('RTA_DST') or zero}/{m['dst_len']}",
                kind=KIND.get(m["type"], str(m["type"])),
                gateway=m.get_attr("RTA_GATEWAY"),
                interface=_ifname(oif),
                family=version,
            ))
    return out


def owned_rules(ipr: IPRoute, proto: int) -> set[RoutingRule]:
    out = set()
    for version, family in FAMILY.items():
        for m in ipr.get_rules(family=family):
            if m.get_attr("FRA_PROTOCOL") != proto:
                continue
            src = m.get_attr("FRA_SRC")
            suppress = m.get_attr("FRA_SUPPRESS_PREFIXLEN")
            out.add(RoutingRule(
                priority=m.get_attr("FRA_PRIORITY") or 0,
                table=m.get_attr("FRA_TABLE") or m["table"],
                family=version,
                fwmark=m.get_attr("FRA_FWMARK"),
                fwmask=m.get_attr("FRA_FWMASK") if m.get_attr("FRA_FWMARK") is not None else None,
                src=f"{src}/{m['src_len']}" if src else None,
                suppress_prefixlength=None if suppress in (None, 0xFFFFFFFF) else suppress,
            ))
    return out


def _route_args(route: Route, proto: int) -> dict[str, Any]:
    args: dict[str, Any] = {
        "family": FAMILY[route.family], "dst": route.dst, "table": route.table, "proto": proto,
    }
    if route.kind != "unicast":
        args["type"] = route.kind
    if route.gateway:
        args["gateway"] = route.gateway
    if route.interface:
        try:
            args["oif"] = socket.if_nametoindex(route.interface)
        except OSError:
            raise ApplyError(f"route {route.describe()}: interface {route.interface} is gone") from None
    return args


def _rule_args(rule: RoutingRule, proto: int) -> dict[str, Any]:
    args: dict[str, Any] = {
        "family": FAMILY[rule.family], "priority": rule.priority, "table": rule.table,
        "protocol": proto,
    }
    if rule.fwmark is not None:
        args["fwmark"] = rule.fwmark
        args["fwmask"] = rule.fwmask if rule.fwmask is not None else 0xFFFFFFFF
    if rule.src is not None:
        addr, _, length = rule.src.partition("/")
        args["src"] = addr
        args["src_len"] = int(length)
    if rule.suppress_prefixlength is not None:
        args["suppress_prefixlen"] = rule.suppress_prefixlength
    return args


def reconcile(routes: Iterable[Route], rules: Iterable[RoutingRule], proto: int) -> RoutingChanges:
    """Make our routes and rules exactly the given ones; add before removing."""
    want_routes, want_rules = set(routes), set(rules)
    added: list[str] = []
    removed: list[str] = []
    failed: list[str] = []
    refused: set[object] = set()

    def attempt(entry: object, method: Any, command: str, args: dict[str, Any], what: str) -> bool:
        try:
            _call(method, command, args, what)
        except ApplyError as exc:
            failed.append(str(exc))
            refused.add(entry)
            return False
        return True

    with IPRoute(strict_check=True) as ipr:
        have_routes = owned_routes(ipr, proto)
        have_rules = owned_rules(ipr, proto)
        # One route per (family, table, prefix): a new gateway replaces ours in
        # place, atomically, where adding first would collide with it.
        ours = {(r.family, r.table, r.dst): r for r in have_routes}
        replaced: set[Route] = set()
        for route in sorted(want_routes - have_routes):
            old = ours.get((route.family, route.table, route.dst))
            command = "add" if old is None else "replace"
            if not attempt(route, ipr.route, command, _route_args(route, proto),
                           f"route {route.describe()}"):
                continue
            added.append(f"route {route.describe()}")
            if old is not None:
                replaced.add(old)
                removed.append(f"route {old.describe()}")
        for rule in sorted(want_rules - have_rules):
            if attempt(rule, ipr.rule, "add", _rule_args(rule, proto), f"rule {rule.describe()}"):
                added.append(f"rule {rule.describe()}")
        for rule in sorted(have_rules - want_rules):
            if attempt(rule, ipr.rule, "del", _rule_args(rule, proto), f"rule {rule.describe()}"):
                removed.append(f"rule {rule.describe()}")
        for route in sorted(have_routes - want_routes - replaced):
            args = _route_args(route, proto) if route.interface else {
                "family": FAMILY[route.family], "dst": route.dst, "table": route.table,
                "proto": proto, **({"type": route.kind} if route.kind != "unicast" else {}),
            }
            if attempt(route, ipr.route, "del", args, f"route {route.describe()}"):
                removed.append(f"route {route.describe()}")
        # Read back what we changed: the kernel must now hold exactly the plan.
        # (With no change, the dump above already was that read-back.)
        if (added or removed) and not refused and (
            owned_routes(ipr, proto) != want_routes or owned_rules(ipr, proto) != want_rules
        ):
            raise ApplyError("routes or rules differ from the plan after reconcile")
    return RoutingChanges(tuple(added), tuple(removed), tuple(failed))


def _call(method: Any, command: str, args: dict[str, Any], what: str) -> None:
    try:
        method(command, **args)
    except NetlinkError as exc:
        if command == "del" and exc.code in (errno.ENOENT, errno.ESRCH):
            return  # already gone
        if exc.code == errno.EEXIST:
            raise ApplyError(f"cannot add {what}: a route or rule we do not own is in the way") from None
        raise ApplyError(f"cannot {command} {what}: {exc.args[-1]}") from None
