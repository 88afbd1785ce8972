"""Send small UDP packets as fast as one core can, for a number of seconds:
each a new connection for the router's conntrack (a new source and
destination port pair), or all of one established flow. Prints the number sent
and the seconds it took.

    python -m labkit.flood SRC DST SECONDS new|same

A raw socket sends prebuilt headers (checksum 0: allowed for UDP over IPv4), so
the sender costs as little per packet as Python allows; the router's cost per
packet shows in how many arrive (count them at the receiver).
"""

from __future__ import annotations

import socket
import struct
import sys
import time

PAYLOAD = b"x" * 18  # 64-byte frames: 14 Ethernet + 20 IP + 8 UDP + 18 + 4 FCS
LENGTH = 8 + len(PAYLOAD)


def main(src: str, dst: str, seconds: float, mode: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    sock.bind((src, 0))
    target = (dst, 0)
    pack, send, clock = struct.pack, sock.sendto, time.perf_counter
    same = pack("!HHHH", 40000, 9, LENGTH, 0) + PAYLOAD
    sent, flow = 0, 0
    start = clock()
    deadline = start + seconds
    while clock() < deadline:
        for _ in range(1024):
            if mode == "new":  # (source port, destination port) never repeats in a run
                flow += 1
                packet = pack("!HHHH", 1024 + flow % 64512, 9 + flow // 64512, LENGTH, 0) + PAYLOAD
            else:
                packet = same
            try:
                send(packet, target)
                sent += 1
            except BlockingIOError:
                pass
    print(sent, round(clock() - start, 4), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])
