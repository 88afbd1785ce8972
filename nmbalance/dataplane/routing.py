"""Reconcile our routes and ip rules with the kernel.

Ownership is read from the kernel: only entries carrying our routing
protocol number are ever changed or removed. Everything else, even inside our
table or priority range, is left exactly as it is.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence
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
    # What the kernel refused, by routing table (a gateway not on-link, say);
    # everything else was still done, so one uplink's trouble never holds up
    # the others.
    failed: tuple[tuple[int, str], ...] = ()

    def __add__(self, other: RoutingChanges) -> RoutingChanges:
        return RoutingChanges(self.added + other.added, self.removed + other.removed,
                              self.failed + other.failed)


@dataclass(frozen=True)
class RoutingDiff:
    """What turns the kernel's routes and rules (ours) into the plan's.

    Applied in two halves, make before break: `make` adds and replaces, so
    every uplink the new nft table may mark for already has its table and
    rules; `brk` removes what no plan uses any more, after the nft table
    stopped marking for it. A kill between any two steps leaves every mark
    with somewhere to go."""

    add_routes: tuple[Route, ...] = ()
    replace_routes: tuple[tuple[Route, Route], ...] = ()  # (ours now, the plan's)
    add_rules: tuple[RoutingRule, ...] = ()
    del_rules: tuple[RoutingRule, ...] = ()
    del_routes: tuple[Route, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add_routes or self.replace_routes or self.add_rules
                    or self.del_rules or self.del_routes)


def diff(have_routes: Iterable[Route], have_rules: Iterable[RoutingRule],
         want_routes: Iterable[Route], want_rules: Iterable[RoutingRule]) -> RoutingDiff:
    have_r, want_r = set(have_routes), set(want_routes)
    have_p, want_p = set(have_rules), set(want_rules)
    # One route per (family, table, prefix): a new gateway replaces ours in
    # place, atomically, where adding first would collide with it.
    ours = {(r.family, r.table, r.dst): r for r in have_r}
    adds, replaces = [], []
    for route in sorted(want_r - have_r):
        old = ours.get((route.family, route.table, route.dst))
        if old is None:
            adds.append(route)
        else:
            replaces.append((old, route))
    replaced = {old for old, _ in replaces}
    return RoutingDiff(
        add_routes=tuple(adds), replace_routes=tuple(replaces),
        add_rules=tuple(sorted(want_p - have_p)), del_rules=tuple(sorted(have_p - want_p)),
        del_routes=tuple(sorted(have_r - want_r - replaced)),
    )


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
                # The kernel hangs an IPv6 unreachable route on lo: that is not ours.
                interface=_ifname(oif) if m["type"] == RTN_UNICAST else None,
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


def _attempt(method: Any, command: str, args: dict[str, Any], what: str,
             table: int) -> RoutingChanges:
    try:
        _call(method, command, args, what)
    except ApplyError as exc:
        return RoutingChanges(failed=((table, str(exc)),))
    if command == "del":
        return RoutingChanges(removed=(what,))
    return RoutingChanges(added=(what,))


def make(ipr: IPRoute, d: RoutingDiff, proto: int) -> RoutingChanges:
    """The first half: routes added and replaced, then rules added."""
    done = RoutingChanges()
    for route in d.add_routes:
        done += _attempt(ipr.route, "add", _route_args(route, proto), f"route {route.describe()}",
                         route.table)
    for old, route in d.replace_routes:
        step = _attempt(ipr.route, "replace", _route_args(route, proto),
                        f"route {route.describe()}", route.table)
        if not step.failed:
            step += RoutingChanges(removed=(f"route {old.describe()}",))
        done += step
    for rule in d.add_rules:
        done += _attempt(ipr.rule, "add", _rule_args(rule, proto), f"rule {rule.describe()}",
                         rule.table)
    return done


def brk(ipr: IPRoute, d: RoutingDiff, proto: int) -> RoutingChanges:
    """The second half: rules removed, then routes."""
    done = RoutingChanges()
    for rule in d.del_rules:
        done += _attempt(ipr.rule, "del", _rule_args(rule, proto), f"rule {rule.describe()}",
                         rule.table)
    for route in d.del_routes:
        args = _route_args(route, proto) if route.interface else {
            "family": FAMILY[route.family], "dst": route.dst, "table": route.table,
            "proto": proto, **({"type": route.kind} if route.kind != "unicast" else {}),
        }
        done += _attempt(ipr.route, "del", args, f"route {route.describe()}", route.table)
    return done


def drift(ipr: IPRoute, routes: Iterable[Route], rules: Iterable[RoutingRule], proto: int
          ) -> list[str]:
    """How our routes and rules in the kernel differ from `routes` and `rules`."""
    d = diff(owned_routes(ipr, proto), owned_rules(ipr, proto), routes, rules)
    groups: list[tuple[str, Sequence[Route | RoutingRule]]] = [
        ("missing route", [*d.add_routes, *(new for _, new in d.replace_routes)]),
        ("missing rule", d.add_rules),
        ("unplanned rule of ours", d.del_rules),
        ("unplanned route of ours", d.del_routes),
    ]
    return [f"{len(items)} {what}{'s' if len(items) > 1 else ''} "
            f"({'; '.join(i.describe() for i in items[:3])}{'; ...' if len(items) > 3 else ''})"
            for what, items in groups if items]


def reconcile(ipr: IPRoute, routes: Iterable[Route], rules: Iterable[RoutingRule], proto: int
              ) -> RoutingChanges:
    """Make our routes and rules exactly the given ones, in one go (flush and tests)."""
    d = diff(owned_routes(ipr, proto), owned_rules(ipr, proto), routes, rules)
    return make(ipr, d, proto) + brk(ipr, d, proto)


def _call(method: Any, command: str, args: dict[str, Any], what: str) -> None:
    try:
        method(command, **args)
    except NetlinkError as exc:
        if command == "del" and exc.code in (errno.ENOENT, errno.ESRCH):
            return  # already gone
        if exc.code == errno.EEXIST:
            raise ApplyError(f"cannot add {what}: a route or rule we do not own is in the way") from None
        raise ApplyError(f"cannot {command} {what}: {exc.args[-1]}") from None
