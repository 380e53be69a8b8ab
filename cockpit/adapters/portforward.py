"""Local port-forward listeners: each 127.0.0.x connection is relayed through the picker's
direct route when it offers one (the agent's SSH tunnel to the Service), else to a pod that a
``TargetPicker`` chooses (re-picked when a pod goes) over the streams of
``cockpit.adapters.podstream``; plus the ``PortForwarder`` protocol the engine depends on.

The relay is a splice between two asyncio protocols: what the pod sends goes straight to
the local socket, and each side pauses the other when its write buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cockpit.adapters.podstream import (
    EOF_GRACE,
    WRITE_HIGH_WATER,
    ApiServer,
    NoReadyPodError,
    PodPortTransport,
    PodTunnel,
    PortForwardError,
    connect_pod_port,
    open_pod_stream,
)
from cockpit.errors import CockpitError

log = logging.getLogger(__name__)

PORT_FORWARD = "port-forward"  # the route through the API server to one pod
TUNNEL = "tunnel"  # the route through the agent's SSH connection to the Service
ROUTES = (TUNNEL, PORT_FORWARD)


class RemoteEnd(Protocol):
    """The far side of a relayed connection, as the relay drives it (an asyncio transport,
    or an SSH channel)."""

    def write(self, data: bytes) -> None: ...

    def write_eof(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


DirectRoute = Callable[[Callable[[], asyncio.Protocol]], Awaitable[RemoteEnd]]
"""Connects a protocol (the relay's far side) straight to the service, not to one pod;
raises a CockpitError when it cannot."""


# -- local listeners ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodTarget:
    """One port of one pod: where a forwarded connection goes."""

    namespace: str
    pod: str
    port: int

    def __str__(self) -> str:
        return f"{self.pod}:{self.port}"


class TargetPicker(Protocol):
    """Chooses the pod for each new connection (the engine's service forward implements it)."""

    async def pick(self, exclude: frozenset[str]) -> PodTarget:
        """A ready pod not in ``exclude``; waits briefly for one, then raises NoReadyPodError."""
        ...

    def failed(self, target: PodTarget, error: CockpitError) -> None:
        """Opening a stream to ``target`` failed: prefer another pod for a while."""
        ...

    def direct(self) -> DirectRoute | None:
        """The route tried before any pod while it is up (the agent's tunnel), else None."""
        ...


class FixedTarget:
    """A picker that always answers the same pod (``kubectl port-forward pod/x`` style)."""

    def __init__(self, target: PodTarget) -> None:
        self.target = target

    async def pick(self, exclude: frozenset[str]) -> PodTarget:
        if self.target.pod in exclude:
            raise NoReadyPodError(f"pod '{self.target.pod}' cannot be reached")
        return self.target

    def failed(self, target: PodTarget, error: CockpitError) -> None:
        pass

    def direct(self) -> DirectRoute | None:
        return None


@dataclass(slots=True)
class ForwardStats:
    """Counters of one listener (or of one route of it), read by the engine when it
    publishes ForwardChanged."""

    connections: int = 0  # open now
    connections_total: int = 0
    bytes_in: int = 0  # from the pod to local clients
    bytes_out: int = 0  # from local clients to the pod
    failed: int = 0  # connections that never reached a pod or ended with an error
    last_error: str = ""
    last_pod: str = ""  # the pod the latest connection reached


_PORT_FALLBACK_ERRNOS = (errno.EADDRINUSE, errno.EACCES)  # taken, or < 1024 without root


def preferred_port(port: int) -> int:
    """The local port a forward of service port ``port`` asks for first: the same, except a
    privileged one without root, which becomes ``port + 10000`` (80 -> 10080), so the
    address is the same run after run and ``cockpit env`` can name it in advance."""
    if 0 < port < 1024 and os.geteuid() != 0:
        return port + 10000
    return port


def candidate_ports(port: int) -> list[int]:
    """The ports to try for a forward of ``port``, in order; 0 = any free one."""
    first = preferred_port(port)
    return [first, 0] if first else [0]


async def bind_loopback(
    host: str, port: int, factory: Callable[[], asyncio.BaseProtocol]
) -> asyncio.Server:
    """Listen on ``host:port``; on a taken or privileged port use the next candidate on
    ``host``; on a host this machine cannot bind (127.0.0.2 on macOS without an alias) use
    127.0.0.1."""
    loop = asyncio.get_running_loop()
    hosts = [host] if host == "127.0.0.1" else [host, "127.0.0.1"]
    last: OSError | None = None
    for h in hosts:
        for p in candidate_ports(port):
            try:
                return await loop.create_server(factory, h, p, backlog=512)
            except OSError as exc:
                last = exc
                if exc.errno in _PORT_FALLBACK_ERRNOS and p != 0:
                    continue  # try the next port on the same address
                if exc.errno == errno.EADDRNOTAVAIL:
                    break  # try the next address
                raise CockpitError(f"cannot listen on {h}:{p}: {exc.strerror}") from exc
    raise CockpitError(f"cannot listen on {host}:{port}: {last}") from last


class PortForwardListener:
    """A local listener whose every connection is relayed to a pod the picker chooses.

    A connection that cannot be opened to one pod (gone, not running) is retried on another
    before any byte was exchanged, so a pod going away costs only the connections that were
    open on it at that moment.
    """

    def __init__(
        self,
        api: ApiServer,
        picker: TargetPicker,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self.api = api
        self.picker = picker
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.attempts = attempts
        self.stats = ForwardStats()  # every route
        self.routes: dict[str, ForwardStats] = {route: ForwardStats() for route in ROUTES}
        self._server: asyncio.Server | None = None
        self._relays: set[_Relay] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (after ``start``)."""
        if self._server is None:
            return self.host, self.port
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start(self) -> tuple[str, int]:
        self._server = await bind_loopback(self.host, self.port, lambda: _Relay(self))
        return self.address

    async def close(self) -> None:
        """Stop listening and cut every open connection; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for relay in list(self._relays):
            relay.abort()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    def cut(self, pod: str) -> int:
        """Abort the open connections to ``pod`` (it is going away); how many there were."""
        cut = [r for r in self._relays if r.target is not None and r.target.pod == pod]
        for relay in cut:
            relay.abort()
        return len(cut)


class _Relay(asyncio.Protocol):
    """One local connection and its stream to a pod: the local side's protocol."""

    def __init__(self, listener: PortForwardListener) -> None:
        self.listener = listener
        self.stats = listener.stats
        self.local: asyncio.Transport | None = None
        self.remote: RemoteEnd | None = None
        self.route: ForwardStats | None = None  # the counters of the route in use
        self.tried_direct = False
        self.target: PodTarget | None = None
        self.local_closed = False
        self.local_eof = False
        self.sent = 0  # bytes sent to the pod on this connection
        self.received = 0
        self.tried: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    # -- local side --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        local: asyncio.Transport = transport  # type: ignore[assignment]
        self.local = local
        local.pause_reading()  # nothing is read until a pod stream is open
        local.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.listener._relays.add(self)
        self.stats.connections += 1
        self.stats.connections_total += 1
        self.task = asyncio.get_running_loop().create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        self.sent += len(data)
        self.stats.bytes_out += len(data)
        assert self.remote is not None and self.route is not None
        self.route.bytes_out += len(data)
        self.remote.write(data)

    def eof_received(self) -> bool:
        self.local_eof = True
        if self.remote is not None:
            self.remote.write_eof()
        return True  # keep our write side open for the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.local_closed = True
        self.listener._relays.discard(self)
        self.stats.connections -= 1
        self._leave_route()
        if self.remote is not None:
            self.remote.close()
        elif self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        if self.remote is not None:
            self.remote.pause_reading()

    def resume_writing(self) -> None:
        if self.remote is not None:
            self.remote.resume_reading()

    def abort(self) -> None:
        if self.local is not None:
            self.local.abort()
        if self.remote is not None:
            self.remote.abort()

    # -- remote side --

    def _take_route(self, remote: RemoteEnd, route: str) -> None:
        self.remote = remote
        self.route = self.listener.routes[route]
        self.route.connections += 1
        self.route.connections_total += 1
        assert self.local is not None
        self.local.resume_reading()

    def _leave_route(self) -> None:
        if self.route is not None:
            self.route.connections -= 1
            self.route = None

    async def _connect(self) -> None:
        listener = self.listener
        direct = None if self.tried_direct else listener.picker.direct()
        if direct is not None:
            self.tried_direct = True
            try:
                remote = await direct(lambda: _RemoteSide(self))
            except CockpitError as exc:
                # The tunnel is down or refused: this connection takes a pod's port-forward.
                log.info("forward %s:%s: %s", listener.host, listener.port, exc.one_line())
                listener.routes[TUNNEL].failed += 1
                listener.routes[TUNNEL].last_error = exc.one_line()
            else:
                if self.local_closed:
                    remote.close()
                    return
                self._take_route(remote, TUNNEL)
                return
        while not self.local_closed:
            try:
                target = await listener.picker.pick(frozenset(self.tried))
            except CockpitError as exc:
                self._fail(exc)
                return
            self.target = target
            self.tried.add(target.pod)
            try:
                remote, _ = await connect_pod_port(
                    listener.api,
                    target.namespace,
                    target.pod,
                    target.port,
                    lambda: _RemoteSide(self),
                    connect_timeout=listener.connect_timeout,
                )
            except CockpitError as exc:
                listener.picker.failed(target, exc)
                if len(self.tried) >= listener.attempts:
                    self._fail(exc)
                    return
                continue
            if self.local_closed:
                remote.close()
                return
            self.stats.last_pod = target.pod
            self._take_route(remote, PORT_FORWARD)
            return

    def _fail(self, exc: CockpitError) -> None:
        self.stats.failed += 1
        self.stats.last_error = exc.one_line()
        log.info("forward %s:%s: %s", self.listener.host, self.listener.port, exc.one_line())
        if self.local is not None:
            self.local.abort()

    def remote_data(self, data: memoryview) -> None:
        self.received += len(data)
        self.stats.bytes_in += len(data)
        assert self.local is not None and self.route is not None
        self.route.bytes_in += len(data)
        self.local.write(data)

    def remote_eof(self) -> None:
        if self.local is not None and not self.local_closed and self.local.can_write_eof():
            self.local.write_eof()

    def remote_lost(self, exc: Exception | None) -> None:
        local = self.local
        if exc is None:
            if local is not None:
                local.close()  # after the buffered answer is written
            return
        error = exc if isinstance(exc, CockpitError) else PortForwardError(str(exc))
        if self.sent == 0 and self.received == 0 and not self.local_closed:
            # Nothing crossed yet (the pod refused at once, the tunnel went): quietly try
            # another pod (after the tunnel: a pod's port-forward).
            tunnel = self.route is self.listener.routes[TUNNEL]
            if self.target is not None and not tunnel:
                self.listener.picker.failed(self.target, error)
            if tunnel or (self.target is not None and len(self.tried) < self.listener.attempts):
                self.remote = None
                self._leave_route()
                assert local is not None
                local.pause_reading()
                self.task = asyncio.get_running_loop().create_task(self._connect())
                return
        self._fail(error)


class _RemoteSide(asyncio.Protocol):
    """The pod side of a relay: hands everything to the relay."""

    accepts_memoryview = True  # chunks go straight to the local socket, never kept

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def data_received(self, data: bytes) -> None:
        self.relay.remote_data(data)  # type: ignore[arg-type]

    def eof_received(self) -> bool:
        self.relay.remote_eof()
        return True  # the local client may still send: keep our direction open

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.remote_lost(exc)

    def pause_writing(self) -> None:
        if self.relay.local is not None:
            self.relay.local.pause_reading()

    def resume_writing(self) -> None:
        if self.relay.local is not None and not self.relay.local_closed:
            self.relay.local.resume_reading()


# A Protocol for the engine: what it needs from this module.


class PortForwarder(Protocol):
    """Opens listeners and streams to pods; ``KubePortForwarder`` is the real one."""

    async def listen(self, host: str, port: int, picker: TargetPicker) -> PortForwardListener:
        """Bind a local listener (``port`` if free, else any) relaying to ``picker``'s pods."""
        ...

    async def open_stream(
        self, namespace: str, pod: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to one pod's port without a local listener."""
        ...

    def close(self) -> None:
        """At the end of a session: close what the streams shared."""
        ...


class KubePortForwarder:
    """The real PortForwarder: everything through one ApiServer."""

    def __init__(self, api: ApiServer, *, connect_timeout: float = 10.0) -> None:
        self.api = api
        self.connect_timeout = connect_timeout

    async def listen(self, host: str, port: int, picker: TargetPicker) -> PortForwardListener:
        listener = PortForwardListener(
            self.api, picker, host=host, port=port, connect_timeout=self.connect_timeout
        )
        await listener.start()
        return listener

    def close(self) -> None:
        """At the end of a session: close the shared connections to the API server."""
        self.api.close_connections()

    async def open_stream(
        self, namespace: str, pod: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_pod_stream(
            self.api, namespace, pod, port, connect_timeout=self.connect_timeout
        )


__all__ = [
    "EOF_GRACE",
    "PORT_FORWARD",
    "ROUTES",
    "TUNNEL",
    "ApiServer",
    "DirectRoute",
    "FixedTarget",
    "ForwardStats",
    "KubePortForwarder",
    "NoReadyPodError",
    "PodPortTransport",
    "PodTarget",
    "PodTunnel",
    "PortForwardError",
    "PortForwardListener",
    "PortForwarder",
    "RemoteEnd",
    "TargetPicker",
    "bind_loopback",
    "candidate_ports",
    "connect_pod_port",
    "open_pod_stream",
    "preferred_port",
]
