"""A TCP server on 127.0.0.1 whose connections a test can break all at once: the base of the
alert worker tests' relays and proxies (the AMQP frame relay, the HTTP proxy, the database link).
The container tests bind it to the address of the Docker bridge their own engine made instead."""

from __future__ import annotations

import asyncio


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
