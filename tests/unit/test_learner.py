"""fastest-response's learner: what it reads from NFLOG, and how a race is won."""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Address, IPv6Address

from nmbalance.sources.learner import (
    NFLOG_PACKET,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    Contender,
    Learner,
    NewDestination,
    parse,
    race,
)


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _logged(prefix: bytes, packet: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(7700))
    body += _attr(NFULA_PREFIX, prefix + b"\0") + _attr(NFULA_PAYLOAD, packet)
    return struct.pack("=IHHII", 16 + len(body), NFLOG_PACKET, 0, 0, 0) + body


def _tcp_syn(dst: str, port: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                     socket.inet_aton("10.250.0.2"), socket.inet_aton(dst))
    return ip + struct.pack("!HHIIBBHHH", 40000, port, 0, 0, 0x50, 0x02, 0, 0, 0)


def test_parse_reads_group_destination_and_port_and_skips_the_rest() -> None:
    data = (_logged(b"nmb:default", _tcp_syn("203.0.113.10", 443))
            + _logged(b"someone else", _tcp_syn("192.0.2.1", 80))
            + _logged(b"nmb:Rweb", b"\x45" + b"\0" * 5))  # truncated: dropped
    assert parse(data) == [NewDestination("default", IPv4Address("203.0.113.10"), 6, 443)]
    assert parse(b"\xff" * 7) == [] and parse(struct.pack("=IH", 3, 0) + b"\0" * 14) == []


def _tcp6_syn(dst: str, port: int) -> bytes:
    ip = struct.pack("!IHBB16s16s", 6 << 28, 20, 6, 64,
                     socket.inet_pton(socket.AF_INET6, "fd00:250::2"),
                     socket.inet_pton(socket.AF_INET6, dst))
    return ip + struct.pack("!HHIIBBHHH", 40000, port, 0, 0, 0x50, 0x02, 0, 0, 0)


def test_parse_reads_ipv6_destinations_too() -> None:
    udp = bytearray(_tcp6_syn("2001:db8:ff:2::1", 53))
    udp[6] = 17
    hop_by_hop = bytearray(_tcp6_syn("2001:db8::3", 80))
    hop_by_hop[6] = 0  # an extension header first: raced by echo, no port
    assert parse(_logged(b"nmb:default", _tcp6_syn("2001:db8:ff:1::1", 443))
                 + _logged(b"nmb:Rb", bytes(udp)) + _logged(b"nmb:Rb", bytes(hop_by_hop))
                 + _logged(b"nmb:Rb", _tcp6_syn("2001:db8::4", 80)[:39])) == [
        NewDestination("default", IPv6Address("2001:db8:ff:1::1"), 6, 443),
        NewDestination("Rb", IPv6Address("2001:db8:ff:2::1"), 17, 53),
        NewDestination("Rb", IPv6Address("2001:db8::3"), 0, 0)]


def test_the_first_answer_wins_and_the_others_are_cancelled() -> None:
    cancelled: list[str] = []

    async def attempt(address: IPv4Address, port: int, via: Contender) -> float:
        delay = {"A": 0.05, "B": 0.01, "C": 0.0}[via.ident]
        try:
            if via.ident == "C":
                raise OSError("no route")
            await asyncio.sleep(delay)
            return delay
        except asyncio.CancelledError:
            cancelled.append(via.ident)
            raise

    contenders = [Contender(n, IPv4Address("10.0.0.1"), 0x100) for n in "ABC"]
    destination = NewDestination("default", IPv4Address("192.0.2.9"), 6, 443)
    assert asyncio.run(race(destination, contenders, tcp=attempt)) == "B"
    assert cancelled == ["A"]


def test_winners_arrive_in_one_batch() -> None:
    batches: list[dict[str, dict[str, list[IPv4Address]]]] = []

    async def main() -> None:
        async def learned(won: object) -> None:
            batches.append(won)  # type: ignore[arg-type]

        async def racer(d: NewDestination, c: object) -> str:
            return "ISP1" if int(d.address) % 2 else "ISP2"

        learner = Learner(lambda group, family: [Contender("ISP1", IPv4Address("10.0.0.1"), 1)],
                          learned, racer)
        task = asyncio.create_task(learner.run())
        learner.offer([NewDestination("default", IPv4Address(f"192.0.2.{n}"), 6, 80)
                       for n in range(1, 11)])
        while learner.learned < 10:
            await asyncio.sleep(0.01)
        task.cancel()
    asyncio.run(main())
    assert len(batches) == 1 and sum(len(a) for a in batches[0]["default"].values()) == 10
