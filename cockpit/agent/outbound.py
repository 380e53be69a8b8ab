"""The agent's side of a session's outbound traffic: each direct channel is checked against the
namespace's Services (``cockpit.core.outbound``) before anything is connected, then forwarded
to the Service's ClusterIP, so kube-proxy balances it over the pods as for in-cluster clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncssh

from cockpit.core.outbound import (
    DEFAULT_CLUSTER_DOMAIN,
    Destination,
    Refused,
    ServiceEntry,
    check_destination,
    service_entry,
)

log = logging.getLogger("cockpit.agent")

FRESH_FOR = 5.0  # seconds a Service list answers before a miss reads it again


class OutboundGate:
    """Decides and opens a session's direct channels; counts what it forwarded and refused."""

    def __init__(
        self,
        namespace: str,
        list_services: Callable[[], Awaitable[list[dict[str, Any]]]],
        *,
        domain: str = DEFAULT_CLUSTER_DOMAIN,
    ) -> None:
        self.namespace = namespace
        self.list_services = list_services
        self.domain = domain
        self.forwarded: Counter[str] = Counter()  # "store:8080" -> channels opened
        self.refused = 0
        self._services: list[ServiceEntry] = []
        self._read_at = -FRESH_FOR
        self._reading: asyncio.Lock = asyncio.Lock()

    async def destination(self, host: str, port: int) -> Destination:
        """Where ``host:port`` goes; Refused when it is not a Service port of the namespace.
        A miss reads the Service list again (a Service created a moment ago), at most once
        per ``FRESH_FOR`` seconds."""
        try:
            return check_destination(host, port, self.namespace, self._services, self.domain)
        except Refused:
            if time.monotonic() - self._read_at < FRESH_FOR:
                raise
        async with self._reading:
            if time.monotonic() - self._read_at >= FRESH_FOR:
                try:
                    items = await self.list_services()
                except Exception as exc:
                    raise Refused(f"the agent cannot list the Services: {exc}") from exc
                self._services = [service_entry(s) for s in items]
                self._read_at = time.monotonic()
        return check_destination(host, port, self.namespace, self._services, self.domain)

    async def open(
        self, conn: asyncssh.SSHServerConnection, session: str, host: str, port: int
    ) -> asyncssh.SSHTCPSession[bytes]:
        """The session of a direct channel to ``host:port``: refused (with the reason, before
        any connect) or forwarded to the Service."""
        try:
            dest = await self.destination(host, port)
        except Refused as exc:
            self.refused += 1
            log.warning("session %s: refused outbound channel: %s", session, exc)
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, str(exc)
            ) from None
        forwarder = await conn.forward_connection(dest.host, dest.port)
        self.forwarded[dest.label] += 1
        log.debug("session %s: outbound %s via %s:%d", session, dest.label, dest.host, dest.port)
        # asyncssh's own direct-tcpip path uses its forwarder as the channel's session too.
        return cast(asyncssh.SSHTCPSession[bytes], forwarder)
