"""The session's SSH connection to the in-cluster agent (asyncssh): control calls, reverse
channels for intercepted traffic, direct channels for outbound traffic.

One connection per session, authenticated with an ephemeral key generated in memory and
pinned to the host key the agent published; no password auth, no agent or X11 forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import asyncssh

from cockpit.agent.sshwire import CIPHERS, MAX_PACKET, WINDOW, skip_cbc_countermeasure
from cockpit.core.intercept import Mode, ServicePort
from cockpit.errors import InterceptError, TunnelError

SUBSYSTEM = "cockpit"

# asyncssh logs every channel at INFO; cockpit reports what matters itself.
logging.getLogger("asyncssh").setLevel(logging.WARNING)
skip_cbc_countermeasure()


def new_client_key() -> asyncssh.SSHKey:
    """A fresh per-session key; it never touches the disk."""
    return asyncssh.generate_private_key("ssh-ed25519", comment="cockpit-session")


def public_openssh(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA... comment``: the form the agent's ConfigMap holds."""
    return key.export_public_key().decode().strip()


class Tunnel(Protocol):
    """What carries the SSH connection to the agent pod: anything with asyncssh's
    ``create_connection(protocol_factory, host, port)`` (a port-forward to the pod)."""

    async def create_connection(
        self, protocol_factory: Any, host: str, port: int
    ) -> tuple[Any, Any]: ...


def tunnel_connector(
    tunnel_to: Callable[[str], Tunnel],
    register_key: Callable[[str, str], None],
    *,
    port: int,
    keepalive: float = 1.0,
    keepalive_count: int = 3,
) -> Callable[[Any, str], Awaitable[AgentLink]]:
    """A connector for the engine: one fresh key per session (kept in memory for the
    session's reconnects), registered before each connection, through ``tunnel_to(pod)``."""
    keys: dict[str, asyncssh.SSHKey] = {}

    async def connect(pod: Any, session: str) -> AgentLink:
        key = keys.setdefault(session, new_client_key())
        # Registered on every connect: the agent (and its ConfigMap) may have been replaced.
        await asyncio.to_thread(register_key, session, public_openssh(key))
        return await AgentLink.connect(
            session=session,
            client_key=key,
            host_key=pod.host_key,
            host=str(pod.name),
            port=port,
            tunnel=tunnel_to(pod.name),
            keepalive=keepalive,
            keepalive_count=keepalive_count,
        )

    return connect


class AgentLink:
    """An open SSH connection to the agent, with its control channel."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        writer: asyncssh.SSHWriter[str],
        reader: asyncssh.SSHReader[str],
    ) -> None:
        self.conn = conn
        self._writer = writer
        self._reader = reader
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._lock = asyncio.Lock()
        self._listeners: dict[tuple[str, int], asyncssh.SSHListener] = {}
        self._reading = asyncio.create_task(self._read_answers())

    @classmethod
    async def connect(
        cls,
        *,
        session: str,
        client_key: asyncssh.SSHKey,
        host_key: str,
        host: str = "127.0.0.1",
        port: int = 22,
        sock: socket.socket | None = None,
        tunnel: Tunnel | None = None,
        keepalive: float = 1.0,
        keepalive_count: int = 3,
        connect_timeout: float = 15.0,
    ) -> AgentLink:
        """Connect and open the control channel; TunnelError (one line) when that fails."""
        try:
            pinned = asyncssh.import_public_key(host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise TunnelError(f"the agent's published host key is unreadable: {exc}") from exc
        options: dict[str, Any] = {}
        if sock is not None:
            options["sock"] = sock
        if tunnel is not None:
            options["tunnel"] = tunnel
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    host,
                    port,
                    username=session,
                    client_keys=[client_key],
                    known_hosts=([pinned], [], []),
                    agent_path=None,
                    password=None,
                    kbdint_auth=False,
                    gss_host=None,
                    config=[],
                    keepalive_interval=keepalive,
                    keepalive_count_max=keepalive_count,
                    encryption_algs=list(CIPHERS),
                    connect_timeout=connect_timeout,
                    **options,
                ),
                connect_timeout,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise TunnelError(
                "the agent's host key does not match the key it published; refusing to connect"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise TunnelError(
                f"the agent refused session {session}'s key", hint="is its key registered?"
            ) from exc
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise TunnelError(f"cannot reach the agent: {exc or type(exc).__name__}") from exc
        try:
            writer, reader, _ = await conn.open_session(subsystem=SUBSYSTEM)
        except (OSError, asyncssh.Error) as exc:
            conn.close()
            raise TunnelError(f"the agent's control channel failed: {exc}") from exc
        return cls(conn, writer, reader)

    # --------------------------------------------------------------------- control

    async def _read_answers(self) -> None:
        try:
            async for line in self._reader:
                answer = json.loads(line)
                future = self._pending.pop(answer.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(answer)
        except (asyncssh.Error, OSError, ValueError):
            pass
        finally:
            lost = TunnelError("the connection to the agent was lost")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            self._pending.clear()

    async def call(self, op: str, wait: float = 15.0, **fields: Any) -> dict[str, Any]:
        """One control request; InterceptError carries the agent's refusal."""
        if self._reading.done():
            raise TunnelError("the connection to the agent is closed")
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._writer.write(json.dumps({"id": rid, "op": op, **fields}) + "\n")
            answer = await asyncio.wait_for(future, wait)
        except (asyncssh.Error, OSError) as exc:
            raise TunnelError(f"the connection to the agent failed: {exc}") from exc
        except TimeoutError as exc:
            raise TunnelError(f"the agent did not answer '{op}' within {wait:g} s") from exc
        finally:
            self._pending.pop(rid, None)
        if not answer.get("ok"):
            raise InterceptError(str(answer.get("error") or f"the agent refused '{op}'"))
        return answer

    async def hello(self) -> dict[str, Any]:
        return await self.call("hello")

    async def reserve(
        self,
        service: str,
        ports: Sequence[ServicePort],
        agent_ports: Mapping[int, int] | None = None,
    ) -> dict[int, int]:
        """Have the agent listen for ``service``; service port -> agent port."""
        answer = await self.call(
            "reserve",
            service=service,
            ports=[{"port": p.port, "protocol": p.protocol} for p in ports],
            agent_ports={str(k): v for k, v in (agent_ports or {}).items()},
        )
        return {int(k): int(v) for k, v in answer["agent_ports"].items()}

    async def route(
        self,
        service: str,
        mode: Mode,
        on: bool,
        header: str | None = None,
        value: str | None = None,
    ) -> list[dict[str, str]]:
        answer = await self.call(
            "route", service=service, mode=mode, on=on, header=header, value=value
        )
        routes: list[dict[str, str]] = answer["routes"]
        return routes

    async def release(self, service: str) -> bool:
        """Give ``service`` up; True when this was the last session and the agent restored it."""
        return bool((await self.call("release", service=service))["restored"])

    async def status(self) -> dict[str, Any]:
        return await self.call("status")

    # ------------------------------------------------------------------- channels

    async def expose(self, service: str, port: int, local_host: str, local_port: int) -> None:
        """Intercepted connections to ``service:port`` go to ``local_host:local_port`` here."""
        if (service, port) in self._listeners:
            return

        def forward(_orig_host: str, _orig_port: int) -> Any:
            return self.conn.forward_connection(local_host, local_port)

        try:
            listener = await self.conn.create_server(
                forward, service, port, window=WINDOW, max_pktsize=MAX_PACKET
            )
        except (asyncssh.Error, OSError) as exc:
            raise TunnelError(
                f"the agent refused the reverse channel for {service}: {exc}"
            ) from exc
        self._listeners[service, port] = listener

    async def connect_direct(
        self,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        within: float = 5.0,
    ) -> asyncssh.SSHTCPChannel[bytes]:
        """A direct channel to ``host:port`` as the agent's pod sees it, spliced to a protocol
        the factory makes (it gets the data, EOF, loss and flow control); the channel serves
        as its transport (write, write_eof, pause_reading, close, abort)."""
        protocol = protocol_factory()
        try:
            channel, _ = await asyncio.wait_for(
                self.conn.create_connection(
                    lambda: _ChannelSide(protocol),
                    host,
                    port,
                    encoding=None,
                    window=WINDOW,
                    max_pktsize=MAX_PACKET,
                ),
                within,
            )
        except asyncssh.ChannelOpenError as exc:
            raise TunnelError(f"the agent refused {host}:{port}: {exc.reason}") from exc
        except TimeoutError as exc:
            raise TunnelError(
                f"the agent did not open a channel to {host}:{port} within {within:g} s"
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise TunnelError(f"the connection to the agent failed: {exc}") from exc
        return channel

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._reading.done()

    async def wait_closed(self) -> None:
        """Returns when the connection is gone (closed, reset, or keepalives unanswered)."""
        await self.conn.wait_closed()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading

    def abort(self) -> None:
        self.conn.abort()

    async def aclose(self) -> None:
        self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.wait_closed(), 5)
        self._reading.cancel()


class _ChannelSide(asyncssh.SSHTCPSession[bytes]):
    """A direct channel's session: hands data, EOF, loss and flow control to an asyncio
    protocol, so one relay serves a pod's port-forward and the agent's tunnel alike."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.protocol.data_received(data)

    def eof_received(self) -> bool:
        return bool(self.protocol.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()
