"""A TCP proxy, in the test's own event loop, that can stop forwarding: a black hole.

Put in front of PostgreSQL, it models a partition or a dead peer as an operator meets
them, where connections are accepted (or stay open) but nothing ever answers, unlike a
refused connection. While `black_hole` is on, every byte either way is swallowed, and new
connections are accepted but never reach the server; the connections that lost bytes
stay broken afterwards, as after a failover, so a client must discard them.
"""

from __future__ import annotations

import asyncio
import contextlib


class BlackHoleProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``, unless `black_hole` is set."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: While True, nothing is forwarded and new connections go nowhere.
        self.black_hole = False
        #: Connections accepted so far.
        self.accepted = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            if self.black_hole:  # accepted, and then nothing: swallow what it sends
                while await reader.read(65536):
                    pass
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
            self._writers.add(upstream_writer)
            await asyncio.gather(
                self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for each in (writer, upstream_writer):
                if each is not None:
                    self._writers.discard(each)
                    each.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if self.black_hole:
                    continue  # dropped on the floor
                writer.write(data)
                await writer.drain()
        writer.close()
