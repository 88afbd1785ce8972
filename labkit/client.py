"""Open N connections to the lab server; print "SOURCE COUNT" per source seen there."""

from __future__ import annotations

import asyncio
import collections
import sys


async def who_am_i(host: str, port: int, bind: str | None) -> str:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(bind, 0) if bind else None), 3)
        writer.write(b"W")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 3)
        writer.close()
        return line.decode().strip() or "-"
    except (TimeoutError, OSError):
        return "-"


async def main(host: str, port: int, count: int, concurrency: int, bind: str | None) -> None:
    tally: collections.Counter[str] = collections.Counter()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            tally[await who_am_i(host, port, bind)] += 1

    await asyncio.gather(*(one() for _ in range(count)))
    for source, n in sorted(tally.items()):
        print(source, n)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], int(a[1]), int(a[2]), int(a[3]), a[4] if len(a) > 4 else None))
