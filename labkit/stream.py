"""A long TCP stream to the lab server's echo mode, measuring the largest gap.

Sends a small message every `interval` ms for `seconds` and prints JSON:
sent, received, the largest gap between echoes and the local port (so a test
can find the flow in conntrack).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def main(host: str, port: int, seconds: float, interval_ms: float) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"E")
    print(json.dumps({"port": writer.get_extra_info("sockname")[1]}), flush=True)
    sent = 0
    received_bytes = 0
    largest_gap = 0.0
    last = time.monotonic()
    end = last + seconds

    async def read() -> None:
        nonlocal received_bytes, largest_gap, last
        while True:
            data = await reader.read(8 * 1024)
            if not data:
                return
            now = time.monotonic()
            largest_gap = max(largest_gap, now - last)
            last = now
            received_bytes += len(data)

    task = asyncio.create_task(read())
    while time.monotonic() < end:
        writer.write(sent.to_bytes(8, "big"))
        sent += 1
        await writer.drain()
        await asyncio.sleep(interval_ms / 1000)
    deadline = time.monotonic() + 5
    while received_bytes < sent * 8 and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.01)
    task.cancel()
    writer.close()
    print(json.dumps({"sent": sent, "received": received_bytes // 8,
                      "largest_gap_ms": round(largest_gap * 1000, 2)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
