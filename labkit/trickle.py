"""A steady trickle of new connections to the lab server, one every GAP ms,
until stdin closes; then print "START END SOURCE" per connection (SOURCE is
"-" when it failed). Benches use it to see when an uplink stopped and
started taking new connections, from the client's side: a connection whose
first SYN went into a dead uplink fails, or succeeds only on a retransmit a
second later."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from labkit.client import who_am_i


async def main(host: str, port: int, gap_ms: float) -> None:
    stop = threading.Event()

    def until_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_eof, daemon=True).start()
    results: list[asyncio.Task[tuple[float, float, str]]] = []
    loop = asyncio.get_running_loop()
    due = loop.time()

    async def timed() -> tuple[float, float, str]:
        started = time.time()
        source = await who_am_i(host, port, None)
        return started, time.time(), source

    while not stop.is_set():
        results.append(asyncio.create_task(timed()))
        due += gap_ms / 1000
        await asyncio.sleep(max(due - loop.time(), 0))
    done = await asyncio.gather(*results)
    sys.stdout.write("".join(f"{s:.6f} {e:.6f} {source}\n" for s, e, source in done))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
