"""Outbound traffic of the local process through the intercept's SSH connection: a local
listener per cluster service whose connections become SSH direct channels, so the agent
connects to ``store:8080`` by name with the cluster's DNS.

The listener outlives reconnects of the tunnel: a connection that arrives while the tunnel is
down waits (up to ``wait``) for it to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from cockpit.engine.intercept import AgentChannel
from cockpit.errors import CockpitError

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


class TunnelListener:
    """``host:port`` here -> ``remote_host:remote_port`` as the agent's pod sees it."""

    def __init__(
        self,
        channel: Callable[[], AgentChannel | None],
        ready: asyncio.Event,
        remote_host: str,
        remote_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        wait: float = 10.0,
    ) -> None:
        self.channel = channel
        self.ready = ready
        self.remote = (remote_host, remote_port)
        self.host = host
        self.port = port
        self.wait = wait
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await asyncio.wait_for(self.ready.wait(), self.wait)
            link = self.channel()
            if link is None:
                raise ConnectionError("no tunnel")
            up_reader, up_writer = await link.open_direct(*self.remote)
        except (TimeoutError, CockpitError, ConnectionError) as exc:
            log.info("outbound %s:%d: %s", *self.remote, exc)
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()


async def _pipe(src: Any, dst: Any) -> None:
    """One direction until EOF (passed on as a half-close); a reset closes the other end."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except Exception as exc:
        log.debug("outbound pipe: %r", exc)
        dst.close()
