"""The lab's "internet" server: tells each client its source address, or echoes.

First byte from the client: b"W" -> reply with the peer address and close
(who am I); b"E" -> echo everything until the client closes (stream tests).
"""

from __future__ import annotations

import asyncio
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        mode = await reader.readexactly(1)
        if mode == b"W":
            writer.write(f"{writer.get_extra_info('peername')[0]}\n".encode())
            await writer.drain()
        else:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
