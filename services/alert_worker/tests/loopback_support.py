"""A TCP server on 127.0.0.1 whose connections a test can break all at once: the base of the
alert worker tests' relays and proxies (the AMQP frame relay, the HTTP proxy, the database link),
and :func:`splice`, the byte-for-byte copying both ways they share once a link is made.
The container tests bind it to the address of the Docker bridge their own engine made instead."""

from __future__ import annotations

import asyncio
import contextlib


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy ``src`` to ``dst`` until either end closes or breaks; then break ``dst`` too."""
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.transport.abort()


Link = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def splice(client: Link, upstream: Link) -> None:
    """Relay both ways between ``client`` and ``upstream`` (reader, writer pairs) until both ends are closed."""
    await asyncio.gather(pipe(client[0], upstream[1]), pipe(upstream[0], client[1]))


class LoopbackServer:
    """Listens on ``host:port`` (loopback unless told otherwise); a subclass serves each connection
    in :meth:`_handle` and keeps its open writers in ``_writers``, so that :meth:`close` can abort them."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def close(self) -> None:
        """Refuse new connections and break every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
