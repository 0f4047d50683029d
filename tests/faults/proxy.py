"""A loopback TCP proxy in front of a broker, to cut and restore its connections.

Run as a process of its own (``python -m tests.faults.proxy PORT TARGET_PORT``), it
forwards ``127.0.0.1:PORT`` to ``127.0.0.1:TARGET_PORT`` until it is killed: killing it
is a broker outage, seen from the clients, that leaves the broker and its data alone.
"""

from __future__ import annotations

import asyncio
import sys

__all__ = ["Proxy"]


class Proxy:
    """A TCP proxy on loopback in front of a broker, to cut and restore connections.

    ``stop()`` refuses new connections and cuts the open ones; ``start()`` again listens
    on the same port, so clients that reconnect find the broker back. ``blackhole()``
    makes the open connections silent without closing them (what either side sends is
    read and dropped, as behind a firewall that drops a flow); new connections are
    forwarded as usual."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pipes: set[asyncio.Task[None]] = set()
        #: The open connections, as (client side, broker side), and those black-holed.
        self._connections: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._holes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()  # the broker is down: so is this connection
            return
        self._writers += [writer, up_writer]
        self._connections.append((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if writer in self._holes:
                    continue  # dropped
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            if writer not in self._holes:  # a black hole stays silent, even on close
                writer.close()

    def blackhole(self) -> int:
        """Make every open connection silent (not closed); return how many there were."""
        for client, broker in self._connections:
            self._holes.update((client, broker))
        count = len(self._connections)
        self._connections.clear()
        return count

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self._connections.clear()
        self._holes.clear()
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def _serve(port: int, target: int) -> None:
    proxy = Proxy(("127.0.0.1", target))
    proxy.port = port
    await proxy.start()
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), int(sys.argv[2])))
