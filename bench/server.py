"""A loopback stand-in for `opencode serve`, run as its own process so its CPU is not the daemon's.

Usage: ``python -m bench.server PLAN.pickle``; prints the port, then serves until killed.
The plan maps a path prefix ("" or "/s3") to a list of ``(seconds, bytes)`` segments. A stream
sends ``server.connected`` at once and the segments once ``GET /go`` has been called, each at its
offset from that moment; then it stays open. REST reads get empty answers. A segment given as a
list of events is sent one HTTP chunk per event, as Bun (OpenCode's runtime) sends them.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import time

Plan = dict[str, list[tuple[float, bytes | list[bytes]]]]
CONNECTED = b'data: {"payload":{"id":"evt_0","type":"server.connected","properties":{}}}\n\n'


class Server:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.go = asyncio.Event()
        self.go_at = 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        target = head.split(b" ", 2)[1].decode()
        path = target.split("?", 1)[0]
        if path == "/go":
            self.go_at = time.monotonic()
            self.go.set()
            await self._reply(writer, b"{}")
            return
        if path.endswith("/global/event"):
            await self._stream(writer, self.plan.get(path[: -len("/global/event")], []))
            return
        await self._reply(writer, b"{}" if path.endswith("/session/status") else b"[]")

    async def _reply(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    async def _stream(
        self, writer: asyncio.StreamWriter, segments: list[tuple[float, bytes | list[bytes]]]
    ) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n"
        )
        try:
            self._chunk(writer, CONNECTED)
            await writer.drain()
            await self.go.wait()
            for at, data in segments:
                delay = self.go_at + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._chunk(writer, data)
                await writer.drain()
            await asyncio.Event().wait()  # stay open like a live server
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _chunk(writer: asyncio.StreamWriter, data: bytes | list[bytes]) -> None:
        if isinstance(data, list):
            writer.write(b"".join(b"%x\r\n%b\r\n" % (len(event), event) for event in data))
            return
        # Bun (OpenCode's runtime) sends chunked bodies; big segments go out in 64 KiB chunks.
        for i in range(0, len(data), 65536):
            piece = data[i : i + 65536]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))


async def main(plan: Plan) -> None:
    server = Server(plan)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with listener:
        await listener.serve_forever()


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        loaded: Plan = pickle.load(f)
    asyncio.run(main(loaded))
