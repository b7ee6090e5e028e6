"""The floor: the least a Python reader of the stream can do (httpx, httpx-sse, one ``json.loads``
per event), as its own process. ``python -m bench.floor URL N``: prints ``ready`` once connected,
then reads N events after the greeting, prints ``done`` and waits to be killed (so that its CPU
can be read from /proc, the same way as the daemon's)."""

from __future__ import annotations

import json
import sys

import anyio
import httpx
from httpx_sse import aconnect_sse


async def main(url: str, total: int) -> None:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=120.0)) as client,
        aconnect_sse(client, "GET", url) as source,
    ):
        events = source.aiter_sse()
        json.loads((await events.__anext__()).data)  # server.connected
        print("ready", flush=True)
        n = 0
        async for sse in events:
            json.loads(sse.data)
            n += 1
            if n == total:
                break
        print("done", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]))
