"""`nmbalance doctor`: Net-ISP-Balance's four preparation tests (the LAN
answers, each ISP answers through itself, forwarding is on, NAT works),
automated and per uplink, plus what breaks multi-uplink setups in practice.
It looks and probes; it changes nothing."""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Iterable, Sequence
from configparser import ConfigParser
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Any

from nmbalance.config.model import Config
from nmbalance.config.values import GATEWAY_TARGET
from nmbalance.core.decide import MSS_CLAMP_DEVICES
from nmbalance.core.facts import Facts, GatewaySource
from nmbalance.core.plan import Plan, UplinkStatus
from nmbalance.dataplane.nft import TableState
from nmbalance.report.connections import Flow

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    why: str
    fix: str = ""

    def line(self) -> str:
        fix = f"\n      -> {self.fix}" if self.fix else ""
        return f"{self.verdict.upper():<4}  {self.name}: {self.why}{fix}"


@dataclass(frozen=True)
class Findings:
    """What doctor read (the caller reads it: see gather)."""

    config: Config
    facts: Facts
    plan: Plan
    table: TableState | None
    daemon: dict[str, Any] | None  # the daemon's bus status, when one runs
    ip_forward: int | None
    rp_filter_warnings: Sequence[str]
    flows: Sequence[Flow] | None  # None: conntrack unreadable
    networkd: tuple[int, dict[str, str]] | None  # (pid, its [Network] settings) when it runs
    clock_synced: bool | None


def _verdict(ok: bool | None) -> str:
    """A test's answer: yes, no, or cannot tell yet (a warning)."""
    return PASS if ok else WARN if ok is None else FAIL


def checks(f: Findings, probe: Any, neighbour: Any) -> list[Check]:
    """`probe(uplink) -> (ok, why)` runs one probe round through the uplink;
    `neighbour(lan) -> (ok, why)` asks the LAN's hosts."""
    out: list[Check] = []
    config, plan = f.config, f.plan
    applied = f.table is not None and f.table.digest == plan.nft.digest
    if f.table is None:
        out.append(Check("applied", WARN, f"table inet {config.kernel.table} is not installed",
                         "start the daemon (systemctl start nmbalance) or run nmbalance apply"))
    elif not applied:
        out.append(Check("applied", WARN, f"table inet {config.kernel.table} holds another "
                         "config's rules", "reload the daemon, or run nmbalance apply"))
    else:
        out.append(Check("applied", PASS, f"table inet {config.kernel.table} is this config's"))
    router = bool(config.lan) or config.kernel.ip_forward is True
    if router:
        if f.ip_forward == 1:
            out.append(Check("forwarding", PASS, "IPv4 forwarding is on"))
        else:
            out.append(Check("forwarding", FAIL, "IPv4 forwarding is off: the LANs' traffic is "
                             "not routed", "kernel.ip_forward = \"auto\" (the default) turns it "
                             "on at apply; or sysctl -w net.ipv4.ip_forward=1"))
    for lan in config.lan:
        ok, why = neighbour(lan)
        out.append(Check(f"LAN {lan.name}", _verdict(ok), why,
                         "" if ok else f"check {lan.device}'s cabling and a host's address "
                         "on it" if ok is False else "connect a host and run doctor again"))
    daemon_states = {u.get("Name"): (u.get("State", ""), u.get("Reason", ""))
                     for u in (f.daemon or {}).get("uplinks", [])}
    for u in plan.uplinks:
        cfg = next(c for c in config.uplink if c.name == u.name)
        state, reason = daemon_states.get(u.name, (u.status.value, u.reason))
        if u.status is UplinkStatus.ABSENT:
            out.append(Check(f"{u.name} interface", FAIL, reason or "its interface is not there",
                             f"check interface = \"{cfg.interface}\" (ip link)"))
            continue
        if u.status is UplinkStatus.NO_GATEWAY:
            out.append(Check(f"{u.name} gateway", FAIL, reason or "no gateway found",
                             "let DHCP or the network manager give it one, or set gateway = "
                             f"\"ADDRESS\" under its [[uplink]] (the next hop on {u.interface})"))
            continue
        if u.status is UplinkStatus.DOWN and not u.gateway:
            out.append(Check(f"{u.name} link", FAIL, reason or "down",
                             f"check {u.interface}'s carrier and address"))
            continue
        out.append(Check(f"{u.name} gateway", PASS,
                         f"{u.gateway or 'point-to-point'} on {u.interface} "
                         f"(from {u.gateway_source or 'the link'})"))
        if cfg.probe:
            ok, why = probe(u.name)
            hint = "" if ok else (
                "its probe targets do not answer through it: check the ISP's line, or "
                "choose targets that answer ping (probe = [...])")
            if ok and not applied:
                ok, why = None, f"{why} (by its address only: not applied, so not by its table)"
            out.append(Check(f"{u.name} probes", _verdict(ok), why, hint))
        else:
            out.append(Check(f"{u.name} probes", WARN, "no probe targets: a silent failure "
                             "upstream goes unnoticed", "set probe = [\"ADDRESS\", ...] or "
                             "probe = [\"gateway\"]"))
        if state not in ("", u.status.value) and f.daemon:
            out.append(Check(f"{u.name} state", PASS if state in ("active", "standby") else WARN,
                             f"the daemon says {state}" + (f": {reason}" if reason else "")))
        out.extend(_nat(f, u.name, cfg.masquerade, u.interface, u.mark))
        out.append(_dns(f, u.name, cfg))
        if u.interface and u.interface.startswith(MSS_CLAMP_DEVICES):
            clamped = config.firewall.clamp_mss is not False
            out.append(Check(f"{u.name} mss", PASS if clamped else WARN,
                             f"{u.interface} has a smaller MTU; TCP MSS "
                             + ("is clamped" if clamped else "is not clamped"),
                             "" if clamped else "clamp_mss = \"auto\" in [firewall]"))
    # Uplinks the system routes IPv6 through now: an IPv6 default route on them.
    with6 = [f"{u.name} (via {u.gateway6} on {u.interface})" for u in f.facts.uplinks
             if u.gateway6 is not None and u.gateway6_source is GatewaySource.KERNEL]
    if with6 and config.ipv6 == "off":
        out.append(Check("ipv6", WARN, f"{', '.join(with6)} "
                         f"{'has' if len(with6) == 1 else 'have'} IPv6, which nmbalance leaves "
                         "to the system's routes (ipv6 = \"off\"): IPv6 connections are "
                         "neither balanced nor moved off a failed uplink"))
    out += [Check("rp_filter", WARN, w.split(": ", 1)[1], "") for w in f.rp_filter_warnings]
    if not f.rp_filter_warnings:
        out.append(Check("rp_filter", PASS, "no reverse-path filter drops balanced replies"))
    out.append(_networkd(f.networkd))
    if f.clock_synced is None:
        out.append(Check("clock", WARN, "cannot tell whether the clock is synchronised"))
    elif f.clock_synced:
        out.append(Check("clock", PASS, "synchronised (NTP)"))
    else:
        out.append(Check("clock", WARN, "not synchronised: TLS and DNSSEC fail through every "
                         "uplink when it drifts", "run an NTP client (systemd-timesyncd, chrony)"))
    return out


def _nat(f: Findings, name: str, masquerade: bool, device: str | None, mark: int
         ) -> list[Check]:
    if not masquerade:
        return [Check(f"{name} nat", PASS, "not masqueraded (masquerade = false): its ISP "
                      "routes the LANs' addresses")]
    if f.table is None or device is None:
        return []
    if device not in {str(e) for e in f.table.sets.get("masq", [])}:
        return [Check(f"{name} nat", FAIL, f"{device} is not in the masquerade set",
                      "apply again; if it stays out, report it")]
    if not f.config.lan or f.flows is None:
        return [Check(f"{name} nat", PASS, f"masquerade on {device}")]
    lans = [IPv4Network(p) for _, p in f.plan.nft.contents.lan_sources]
    mask = f.plan.mark_mask
    mine = [fl for fl in f.flows if fl.mark & mask == mark and _within(fl.src, lans)]
    if not mine:
        return [Check(f"{name} nat", WARN, f"masquerade on {device}, but no LAN connection "
                      "through it seen yet", "open a connection from a LAN host and run again")]
    done = sum(fl.translated for fl in mine)
    if not done:
        return [Check(f"{name} nat", FAIL, f"{len(mine)} LAN connections through it, none "
                      "translated", "another nat table may accept before ours: nft list ruleset")]
    return [Check(f"{name} nat", PASS, f"masquerade on {device}: {done} of {len(mine)} recent "
                  "LAN connections translated")]


def _within(address: str, nets: Iterable[IPv4Network]) -> bool:
    try:
        addr = ip_address(address)
    except ValueError:
        return False
    return isinstance(addr, IPv4Address) and any(addr in n for n in nets)


def _dns(f: Findings, name: str, cfg: Any) -> Check:
    servers = list(f.facts.uplink(name).dns) or list(cfg.dns)
    names = [t for t in cfg.probe if isinstance(t, str) and t != GATEWAY_TARGET]
    if servers:
        return Check(f"{name} dns", PASS, "DNS " + ", ".join(str(s) for s in servers))
    verdict = FAIL if names else WARN
    return Check(f"{name} dns", verdict, "no DNS server known for it" + (
        f": the probe targets {', '.join(names)} cannot be resolved through it" if names
        else ""), "set dns = [\"ADDRESS\"] under its [[uplink]], or let DHCP give one")


def _networkd(found: tuple[int, dict[str, str]] | None) -> Check:
    if found is None:
        return Check("networkd", PASS, "systemd-networkd does not run here")
    pid, settings = found
    keys = ("ManageForeignRoutingPolicyRules", "ManageForeignRoutes")
    managing = [k for k in keys if settings.get(k.lower(), "yes").lower() in
                ("yes", "true", "1", "on")]
    if managing:
        return Check("networkd", FAIL, f"systemd-networkd (pid {pid}) removes rules and routes "
                     f"it did not make ({', '.join(managing)} is on): ours among them",
                     "in /etc/systemd/networkd.conf, [Network] " +
                     " ".join(f"{k}=no" for k in managing) + "; then restart systemd-networkd")
    return Check("networkd", PASS, "systemd-networkd leaves our rules and routes alone")


# --- reading (what checks() is given) --------------------------------------------------------
NETWORKD_CONF = ("etc/systemd/networkd.conf",)
NETWORKD_DROPINS = ("usr/lib/systemd/networkd.conf.d", "run/systemd/networkd.conf.d",
                    "etc/systemd/networkd.conf.d")


def networkd_settings(root: Path) -> dict[str, str]:
    """[Network] of networkd.conf and its drop-ins, as networkd reads them from `root`
    (its own view of the file system: /proc/PID/root)."""
    parser = ConfigParser(strict=False, interpolation=None)
    files = [root / p for p in NETWORKD_CONF]
    for d in NETWORKD_DROPINS:
        folder = root / d
        if folder.is_dir():
            files += sorted(folder.glob("*.conf"), key=lambda p: p.name)
    for path in files:
        try:
            parser.read_string(path.read_text(), str(path))
        except (OSError, ValueError):
            continue
    return dict(parser["Network"]) if parser.has_section("Network") else {}


def networkd_pid() -> int | None:
    """The pid of the systemd-networkd in this network namespace, from the bus."""
    async def ask() -> int | None:
        from nmbalance.bus.client import DBUS, DBUS_PATH, call, close, connect, name_has_owner
        from nmbalance.sources.networkd import NAME

        bus = await connect()
        try:
            if not await name_has_owner(bus, NAME):
                return None
            body = await call(bus, DBUS, DBUS_PATH, DBUS, "GetConnectionUnixProcessID", "s",
                              [NAME])
            return int(body[0]) if body else None
        finally:
            await close(bus)
    try:
        return asyncio.run(asyncio.wait_for(ask(), 5))
    except Exception:  # no bus, or it does not say
        return None


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("rest", ctypes.c_byte * 252)]


TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


def clock_synced() -> bool | None:
    """What the kernel's NTP state says (whoever disciplines the clock)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = libc.adjtimex(ctypes.byref(_Timex()))
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state != TIME_ERROR


# REACHABLE, STALE, DELAY, PROBE, PERMANENT: a host that was there (not INCOMPLETE or FAILED).
NUD_SEEN = 0x02 | 0x04 | 0x08 | 0x10 | 0x80


def neighbours_of(device: str) -> list[str]:
    """LAN hosts the kernel has seen on `device` lately (its neighbour table)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=device)
        if not index:
            return []
        found = []
        for n in ipr.get_neighbours(ifindex=index[0], family=2):
            addr, state = n.get_attr("NDA_DST"), n["state"]
            if addr and state & NUD_SEEN:
                found.append(str(addr))
        return found


def ping(address: str, source: str | None = None) -> float | None:
    """One echo request; its round trip in ms, or None."""
    from icmplib import ping as icmp_ping

    try:
        host = icmp_ping(address, count=1, timeout=1, source=source,
                         privileged=os.geteuid() == 0)
    except Exception:  # unreachable, refused: no answer
        return None
    return float(host.avg_rtt) if host.is_alive else None


def proc_root(pid: int) -> Path:
    return Path(f"/proc/{pid}/root")


def probe_through(config: Config, facts: Facts, plan: Plan) -> Any:
    """One round to each uplink's probe targets, as the daemon sends it: from the
    uplink's address (so by its source rule and table), names resolved through it."""
    from nmbalance.sources.probes import Prober, ProbeTargets, unprivileged_icmp_allowed

    privileged = not unprivileged_icmp_allowed()

    def source(name: str) -> IPv4Address | None:
        return next((a.ip for a in facts.uplink(name).addresses
                     if isinstance(a.ip, IPv4Address)), None)

    def mark(name: str) -> int:
        found = plan.get(name)
        return found.mark if found else 0

    async def one(name: str) -> tuple[bool, str]:
        uplink = next(u for u in config.uplink if u.name == name)
        address = source(name)
        if address is None:
            return False, "it has no IPv4 address to probe from"
        targets = ProbeTargets(source, facts.uplink, mark)
        found, problem = await targets.expand(uplink, address)
        if not found:
            return False, problem
        prober = Prober(len(found), privileged)
        try:
            result = await prober.round(found, address, config.health.round_timeout_ms / 1000,
                                        config.health.reliability)
        finally:
            prober.close()
        table = plan.uplink(name).table
        rtt = f", {result.rtt_ms:.1f} ms" if result.rtt_ms is not None else ""
        what = (f"{result.answered} of {len(found)} answered{rtt} ({result.detail}), "
                f"from {address} by table {table}")
        return result.ok, what + (f"; {problem}" if problem else "")

    return lambda name: asyncio.run(one(name))


def ask_neighbours(lan: Any) -> tuple[bool | None, str]:
    hosts = neighbours_of(lan.device)
    if not hosts:
        return None, f"no host seen on {lan.device} yet (its neighbour table is empty)"
    for host in hosts[:3]:
        rtt = ping(host)
        if rtt is not None:
            return True, f"{host} answers on {lan.device} ({rtt:.1f} ms)"
    return False, (f"{len(hosts)} hosts known on {lan.device}, none of "
                   f"{', '.join(hosts[:3])} answers ping")


def gather(config: Config) -> Findings:
    from nmbalance.bus.query import daemon_status
    from nmbalance.dataplane.nft import NftTable
    from nmbalance.dataplane.sysctl import Sysctls
    from nmbalance.oneshot import observe
    from nmbalance.report.connections import read_flows

    facts, plan = observe(config)
    sysctls = Sysctls()
    try:
        flows: list[Flow] | None = read_flows()
    except OSError:
        flows = None
    pid = networkd_pid()
    return Findings(
        config=config, facts=facts, plan=plan, table=NftTable(config.kernel.table).read(),
        daemon=daemon_status(), ip_forward=sysctls.forwarding(),
        rp_filter_warnings=sysctls.reverse_path_warnings(
            u.interface for u in plan.uplinks if u.interface and u.routed),
        flows=flows,
        networkd=(pid, networkd_settings(proc_root(pid))) if pid is not None else None,
        clock_synced=clock_synced())


def doctor(config: Config) -> list[Check]:
    found = gather(config)
    return checks(found, probe_through(config, found.facts, found.plan), ask_neighbours)
