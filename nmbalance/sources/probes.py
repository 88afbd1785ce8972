"""ICMP echo probes sent through one uplink, in rounds on a schedule.

A probe is bound to the uplink's own address, so the uplink's source rule
routes it by the uplink's own table, and the output chain leaves ICMP
unmarked. icmplib's synchronous socket API is the one both 2.1 (Debian 13)
and 3.0 offer, so each echo runs in a worker thread of our own pool, sized
so that no probe waits behind another and turns a queue into "loss".

The scheduler runs one loop per probed uplink, every interval, and hands
each round's outcome to a callback; it restarts as a whole when the config
changes (other targets, interval or pool size). Before each round the
targets are worked out anew: "gateway" is the uplink's gateway now (or its
point-to-point peer), a host name what the uplink's DNS says (resolver.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from statistics import median
from typing import Protocol

from icmplib import ICMPLibError, ICMPRequest, ICMPv4Socket, ICMPv6Socket, SocketPermissionError

from nmbalance.aio import raise_if_cancelled
from nmbalance.config.model import Config, Uplink
from nmbalance.config.values import GATEWAY_TARGET
from nmbalance.core.facts import UplinkFacts
from nmbalance.core.health_machine import Lost, Observation, Reply
from nmbalance.inet import AnyAddress
from nmbalance.sources.resolver import ProbeResolver, ResolveError


def unprivileged_icmp_allowed() -> bool:
    """Datagram ICMP sockets need our gid in net.ipv4.ping_group_range."""
    try:
        ICMPv4Socket(privileged=False).close()
    except SocketPermissionError:
        return False
    return True


@dataclass(frozen=True)
class RoundResult:
    answered: int
    needed: int
    rtt_ms: float | None  # median of the answers
    detail: str  # to whom, and what went wrong, for the log line
    unanswered: tuple[AnyAddress, ...] = ()

    @property
    def ok(self) -> bool:
        return self.answered >= self.needed


def echo(target: AnyAddress, source: AnyAddress, timeout: float, privileged: bool,
         ident: int, sequence: int) -> float:
    """One echo request; the round trip in ms. Raises ICMPLibError or OSError."""
    family = ICMPv4Socket if target.version == 4 else ICMPv6Socket
    with family(address=str(source), privileged=privileged) as sock:
        request = ICMPRequest(destination=str(target), id=ident, sequence=sequence)
        sock.send(request)
        reply = sock.receive(request, timeout)
        reply.raise_for_status()
        return float(reply.time - request.time) * 1000.0


def _why(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    if type(exc).__name__ == "TimeoutExceeded":
        return "no reply"
    return text[:80] or type(exc).__name__


class RoundSender(Protocol):
    """What sends a probe round: the real Prober, or a test's stand-in."""

    async def round(self, targets: Sequence[AnyAddress], source: AnyAddress,
                    timeout: float, reliability: int) -> RoundResult: ...

    def close(self) -> None: ...


class Prober:
    def __init__(self, workers: int, privileged: bool) -> None:
        self.privileged = privileged
        self._pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="probe")
        # A new ICMP id for every echo. Raw sockets see every reply to their
        # address, so the id keeps concurrent probes apart; and conntrack keys
        # ICMP by id, so a fixed id would keep one entry alive for ever: one
        # probe that left by the wrong path during a route change (and was
        # masqueraded there) would then pin every later probe to that path.
        # Datagram sockets get a fresh id from the kernel anyway.
        self._ids = itertools.count(os.getpid())

    async def round(self, targets: Sequence[AnyAddress], source: AnyAddress,
                    timeout: float, reliability: int) -> RoundResult:
        loop = asyncio.get_running_loop()
        needed = min(reliability, len(targets))
        jobs = [
            loop.run_in_executor(self._pool, echo, target, source, timeout, self.privileged,
                                 next(self._ids) & 0xFFFF, 1)
            for target in targets
        ]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        rtts = [o for o in outcomes if isinstance(o, float)]
        failures = [
            f"{target}: {_why(o)}" for target, o in zip(targets, outcomes, strict=True)
            if isinstance(o, BaseException)
        ]
        for o in outcomes:  # only what a probe can raise counts as loss
            if isinstance(o, BaseException) and not isinstance(o, ICMPLibError | OSError):
                raise o
        if len(targets) == 1:
            detail = f"to {targets[0]}"
        else:
            detail = f"({len(rtts)} of {len(targets)} targets answered, {needed} needed)"
        if failures and len(targets) > 1:
            detail += ": " + "; ".join(failures)
        unanswered = tuple(t for t, o in zip(targets, outcomes, strict=True)
                           if isinstance(o, BaseException))
        return RoundResult(len(rtts), needed, median(rtts) if rtts else None, detail, unanswered)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class ProbeTargets:
    """What an uplink's probe targets stand for now, and where its probes leave from."""

    source: Callable[[str], AnyAddress | None]  # None while it has no table of its own
    facts: Callable[[str], UplinkFacts | None]
    mark: Callable[[str], int] = lambda name: 0  # its fwmark (DNS queries are marked)
    resolver: ProbeResolver = field(default_factory=ProbeResolver)
    family: int = 4  # which of an uplink's targets these are (Uplink.probes)
    _names: dict[str, dict[AnyAddress, str]] = field(default_factory=dict)

    async def expand(self, uplink: Uplink, source: AnyAddress
                     ) -> tuple[list[AnyAddress], str]:
        """The addresses to probe this round, and why some target has none."""
        out: list[AnyAddress] = []
        names: dict[AnyAddress, str] = {}
        problems: list[str] = []
        facts = self.facts(uplink.name)
        for target in uplink.probes(self.family):
            if isinstance(target, IPv4Address | IPv6Address):
                out.append(target)
            elif target == GATEWAY_TARGET:
                hop = _next_hop(facts)
                if hop is None:
                    problems.append("no gateway to probe")
                else:
                    out.append(hop)
            elif isinstance(source, IPv4Address):
                servers = [a for a in (facts.dns if facts else ()) or uplink.dns
                           if isinstance(a, IPv4Address)]
                try:
                    found = await self.resolver.resolve(uplink.name, target, servers, source,
                                                        self.mark(uplink.name))
                except ResolveError as exc:
                    problems.append(str(exc))
                    continue
                out.append(found[0])
                names[found[0]] = target
        self._names[uplink.name] = names
        return list(dict.fromkeys(out)), "; ".join(problems)

    def lost(self, uplink: str, addresses: Sequence[AnyAddress]) -> None:
        names = self._names.get(uplink, {})
        for addr in addresses:
            if addr in names:
                self.resolver.lost(uplink, names[addr])

    def shown(self, config: Config) -> Mapping[str, list[str]]:
        """Per uplink, each probe target and what it stands for now."""
        out: dict[str, list[str]] = {}
        for u in config.uplink:
            resolved = self.resolver.shown(u.name)
            hop = _next_hop(self.facts(u.name))
            out[u.name] = [
                str(t) if isinstance(t, IPv4Address | IPv6Address)
                else f"gateway = {hop or 'none'}" if t == GATEWAY_TARGET
                else f"{t} = {resolved.get(t, 'not resolved yet')}"
                for t in u.probes(self.family)]
        return out


def _next_hop(facts: UplinkFacts | None) -> AnyAddress | None:
    """What "gateway" probes: the gateway, or a point-to-point link's far end."""
    return (facts.gateway or facts.peer) if facts is not None else None


class _Restart(Exception):
    """Raised inside the group to end it for a restart."""


class ProbeScheduler:
    def __init__(self, config: Callable[[], Config], targets: ProbeTargets,
                 observe: Callable[[str, Observation], None],
                 sender: Callable[[int], RoundSender]) -> None:
        self._config = config  # the current config, read at each (re)start
        self.targets = targets
        self._observe = observe
        self._sender = sender  # makes a round sender with this many workers
        self._restart = asyncio.Event()

    def restart(self) -> None:
        self._restart.set()

    async def run(self) -> None:
        while True:
            self._restart.clear()
            config = self._config()
            self.targets.resolver.keep({(u.name, t) for u in config.uplink for t in u.probe
                                        if isinstance(t, str)})
            family = self.targets.family
            prober = self._sender(max(sum(len(u.probes(family)) for u in config.uplink), 4))
            try:
                async with asyncio.TaskGroup() as tg:
                    for u in config.uplink:
                        if u.probes(family):
                            tg.create_task(self._loop(config, u, prober))
                    tg.create_task(self._until_restart())
            except* _Restart:
                pass
            finally:
                prober.close()
            raise_if_cancelled()  # a stop that came with the restart

    async def _until_restart(self) -> None:
        await self._restart.wait()
        raise _Restart

    async def _loop(self, config: Config, uplink: Uplink, prober: RoundSender) -> None:
        health = config.health
        interval = health.interval_ms / 1000
        timeout = health.round_timeout_ms / 1000
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            source = self.targets.source(uplink.name)
            if source is not None:
                await self._round(uplink, source, prober, timeout, health.reliability)
            due += interval
            now = loop.time()
            if due < now:  # fell behind (a suspended machine): skip, don't burst
                due = now
            await asyncio.sleep(due - now)

    async def _round(self, uplink: Uplink, source: AnyAddress, prober: RoundSender,
                     timeout: float, reliability: int) -> None:
        addresses, problem = await self.targets.expand(uplink, source)
        if not addresses:  # nothing to probe: a round lost, with the reason
            self._observe(uplink.name, Lost(problem))
            return
        result = await prober.round(addresses, source, timeout, reliability)
        self.targets.lost(uplink.name, result.unanswered)
        detail = f"{result.detail}; {problem}" if problem else result.detail
        self._observe(uplink.name, Reply(result.rtt_ms or 0.0) if result.ok else Lost(detail))
