"""The status document (report.status) for people: a table, and the lines
`status --watch` prints when its output is not a terminal."""

from __future__ import annotations

import time
from typing import Any

HEADER = (f"{'UPLINK':<12} {'STATE':<10} {'SHARE':>6} {'SEEN':>6}  {'DEVICE':<10} "
          f"{'ADDRESS':<15} {'GATEWAY':<15} {'FROM':<16} {'RTT':>7} {'LOSS':>5}  "
          "LOAD Mbit/s")


def _num(value: float | None, fmt: str, missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def load(u: dict[str, Any]) -> str:
    if u["load_down_mbps"] is None:
        return "-"
    return f"{u['load_down_mbps']:.1f} down {u['load_up_mbps']:.1f} up"


def uplink_line(u: dict[str, Any]) -> str:
    state = u["state"] + ("*" if u["enabled"] is False else "")
    return (f"{u['name']:<12} {state:<10} {u['share']:>6.1%} "
            f"{_num(u['measured_share'], '.1%'):>6}  {u['interface'] or '-':<10} "
            f"{u['address'] or '-':<15} {u['gateway'] or '-':<15} "
            f"{u['gateway_source'] or '-':<16} "
            f"{_num(u['latency_ms'], '.1f') + ('ms' if u['latency_ms'] is not None else ''):>7} "
            f"{_num(u['loss_percent'], '.0f') + ('%' if u['loss_percent'] is not None else ''):>5}"
            f"  {load(u)}")


def title(status: dict[str, Any]) -> str:
    if status["source"] == "daemon":
        follows = ", ".join(status["following"]) or "the kernel alone"
        return f"nmbalance daemon: mode {status['mode']}, following {follows}"
    mode = f"mode {status['mode']}, " if status["mode"] else ""
    return f"no daemon running: {mode}read from the kernel (table inet {status['table']})"


def render(status: dict[str, Any]) -> str:
    lines = [title(status)]
    if not status["installed"] and status["source"] == "kernel":
        lines.append(f"table inet {status['table']} is not installed")
    if status["uplinks"]:
        lines.append(HEADER)
    for u in status["uplinks"]:
        lines.append(uplink_line(u))
        if u["reason"]:
            lines.append(f"{'':<12} {u['reason']}")
        via = f" via {u['gateway6']} ({u['gateway_source6']})" if u["gateway6"] else ""
        if u["state6"] is not None:
            lines.append(f"{'':<12} IPv6 {u['state6']}, share {u['share6']:.0%}: "
                         f"{u['address6'] or '(no global address)'}{via}"
                         + (f"; {u['reason6']}" if u["reason6"] else ""))
        elif u["address6"] or u["gateway6"]:
            lines.append(f"{'':<12} IPv6 {u['address6'] or '(no global address)'}{via}: "
                         "the system's routes, not balanced")
        if any(not t[:1].isdigit() for t in u["probing"]):
            lines.append(f"{'':<12} probing {', '.join(u['probing'])}")
    lines += [f"choice of {choice}" for choice in status["choices"]]
    notes = ["SHARE: of new connections, as decided; SEEN: as counted "
             + ("over the last minute" if status["source"] == "daemon"
                else "since the table was installed")]
    if any(u["enabled"] is False for u in status["uplinks"]):
        notes.append("*: left out by request (nmbalance enable UPLINK takes it back)")
    return "\n".join(lines + notes) + "\n"


def change_lines(previous: dict[str, Any] | None, status: dict[str, Any]) -> list[str]:
    """One timestamped line per uplink whose state, reason or gateway changed
    (all of them the first time): what a log or a pipe wants."""
    stamp = time.strftime("%H:%M:%S")
    before = {u["name"]: u for u in (previous or {}).get("uplinks", [])}
    out = []
    for u in status["uplinks"]:
        old = before.get(u["name"])
        key = ("state", "reason", "gateway", "interface", "enabled")
        if old is None or any(old[k] != u[k] for k in key):
            why = f" ({u['reason']})" if u["reason"] else ""
            out.append(f"{stamp} {u['name']} {u['state']}{why} share {u['share']:.1%} "
                       f"dev {u['interface'] or '-'} via {u['gateway'] or '-'}")
    return out
