"""Delay packets in the lab where the kernel has no netem: an NFQUEUE holder.

Bound to a queue that an iptables rule in an ISP namespace feeds
(`iptables -A FORWARD -i rtr -j NFQUEUE --queue-num N --queue-bypass`),
it holds each packet for the delay in milliseconds written in DELAY_FILE
(re-read every 0.2 s) and then accepts it. Raw nfnetlink, no library:
metadata only, one verdict per packet.

    python -m labkit.delayer QUEUE DELAY_FILE    (prints "ready")
"""

from __future__ import annotations

import heapq
import os
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _message(kind: int, queue: int, attrs: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind,
                       NLM_F_REQUEST, seq, 0) + body


def _packet_ids(data: bytes) -> list[int]:
    ids = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            at = offset + 20  # nlmsghdr + nfgenmsg
            while at + 4 <= offset + length:
                alen, akind = struct.unpack_from("=HH", data, at)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, at + 4)[0])
                at += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return ids


def _delay(path: str) -> float:
    try:
        with open(path) as f:
            return max(float(f.read().strip() or 0), 0.0) / 1000
    except (OSError, ValueError):
        return 0.0


def main(queue: int, delay_file: str) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    bind = struct.pack("=BxH", NFQNL_CFG_CMD_BIND, 0)
    sock.send(_message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_CMD, bind), 1))
    params = struct.pack("!IB", 0, NFQNL_COPY_META)
    sock.send(_message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_PARAMS, params), 2))
    print("ready", flush=True)
    held: list[tuple[float, int]] = []
    delay, read_at, seq = _delay(delay_file), time.monotonic(), 3
    while True:
        now = time.monotonic()
        if now - read_at > 0.2:
            delay, read_at = _delay(delay_file), now
        while held and held[0][0] <= now:
            _, packet = heapq.heappop(held)
            verdict = struct.pack("!II", NF_ACCEPT, packet)
            sock.send(_message(NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, verdict), seq))
            seq += 1
        sock.settimeout(max(held[0][0] - now, 0.001) if held else 0.2)
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            continue
        arrived = time.monotonic()
        for packet in _packet_ids(data):
            heapq.heappush(held, (arrived + delay, packet))


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]), sys.argv[2])
    except KeyboardInterrupt:
        os._exit(0)
