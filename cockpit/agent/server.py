"""The agent: an asyncssh server sessions reach through a port-forward, its routing table and
listeners, and the crash-safety clock that restores Services nobody holds any more.

Control protocol: the ``cockpit`` SSH subsystem carries JSON lines, ``{"id": 1, "op": ...}``
answered by ``{"id": 1, "ok": true, ...}`` or ``{"id": 1, "ok": false, "error": "one line"}``.
Reverse channels (forwarded-tcpip, ``listen_host`` = the service name) carry intercepted
traffic to a session; direct channels (direct-tcpip) carry its outbound traffic to the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from cockpit import __version__
from cockpit.agent.cluster import ClusterOps
from cockpit.agent.outbound import OutboundGate
from cockpit.agent.router import Origin, Reader, Router, Writer
from cockpit.agent.sshwire import CIPHERS, MAX_PACKET, WINDOW, skip_cbc_countermeasure
from cockpit.core.agent_spec import AgentSettings
from cockpit.core.intercept import (
    DEFAULT_HEADER,
    Claim,
    HeaderMatch,
    Leases,
    RouteTable,
    ServicePort,
    allocate_agent_ports,
    record_of,
)
from cockpit.errors import InterceptError

log = logging.getLogger("cockpit.agent")
skip_cbc_countermeasure()

SUBSYSTEM = "cockpit"
PROTOCOL_VERSION = 1
OPEN_TIMEOUT = 1.0  # seconds a session has to accept a reverse channel
SESSION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ControlError(Exception):
    """A control request the agent refuses; its message goes back to the session."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    pod: str
    settings: AgentSettings
    namespace: str = "default"
    bind: str = "0.0.0.0"
    ssh_port: int = 2222
    tick: float = 0.25  # housekeeping period (grace and TTL resolution)


class _ReverseListener(asyncssh.SSHListener):
    """Accepts a session's tcpip-forward request without listening anywhere: the agent's own
    per-Service listeners decide when to open channels back to the session. While it stands,
    the router keeps a few channels to the session open ahead of need."""

    def __init__(self, router: Router, service: str, port: int, session: str) -> None:
        super().__init__()
        self._router = router
        self._service = service
        self._port = port
        self._session = session
        router.keep_warm(service, port, session)

    def get_port(self) -> int:
        return self._port

    def close(self) -> None:
        self._router.stop_warm(self._session, self._service)

    async def wait_closed(self) -> None:
        pass


class _Connection(asyncssh.SSHServer):
    """One SSH connection; ``session`` is its authenticated user name."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.conn: asyncssh.SSHServerConnection | None = None
        self.session = ""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session and self.conn is not None:
            self.agent.session_lost(self.session, self.conn, exc)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return await self.agent.authorized(username, key)

    def auth_completed(self) -> None:
        assert self.conn is not None
        self.session = self.conn.get_extra_info("username")
        self.agent.session_connected(self.session, self.conn)

    def server_requested(self, listen_host: str, listen_port: int) -> asyncssh.SSHListener:
        return _ReverseListener(self.agent.router, listen_host, listen_port, self.session)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        # Outbound traffic of the session's local process: to a Service of the namespace
        # only (checked before any connect), never an open proxy.
        assert self.conn is not None
        return self.agent.outbound.open(self.conn, self.session, dest_host, dest_port)


class Agent:
    """The shared per-namespace agent. Also the router's SessionLinks."""

    def __init__(self, config: AgentConfig, cluster: ClusterOps, origin: Origin) -> None:
        self.config = config
        self.settings = config.settings
        self.cluster = cluster
        self.table = RouteTable()
        self.leases = Leases()
        self.router = Router(self.table, self, origin, bind=config.bind)
        self.outbound = OutboundGate(config.namespace, cluster.services)
        self.conns: dict[str, asyncssh.SSHServerConnection] = {}
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._locks: dict[str, asyncio.Lock] = {}
        self._server: asyncssh.SSHAcceptor | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._retry_at: dict[str, float] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self.deleting_self = False
        self.ready = asyncio.Event()
        self.ssh_port = config.ssh_port

    @property
    def public_host_key(self) -> str:
        return self.host_key.export_public_key().decode().strip()

    # ------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Reopen the ports of the Services this agent owns, open the SSH port, then publish
        the host key: sessions take a published key as the sign the agent is ready."""
        now = time.monotonic()
        for svc in await self._owned_services():
            name = svc["metadata"]["name"]
            record = record_of(svc)
            if record is None:
                continue
            try:
                await self.router.open(name, record.agent_ports())
            except OSError as exc:
                log.error("cannot reopen ports of %s: %s", name, exc)
                continue
            self.leases.adopt(name, now)
        self._server = await asyncssh.create_server(
            lambda: _Connection(self),
            self.config.bind,
            self.config.ssh_port,
            server_host_keys=[self.host_key],
            process_factory=self._control,
            keepalive_interval=self.settings.keepalive,
            keepalive_count_max=self.settings.keepalive_count,
            encryption_algs=list(CIPHERS),
            login_timeout=15,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            gss_host=None,
            reuse_address=True,
        )
        self.ssh_port = int(self._server.get_addresses()[0][1])
        await self.cluster.publish_host_key(self.config.pod, self.public_host_key)
        self._housekeeping = asyncio.create_task(self._housekeep())
        self.ready.set()
        log.info(
            "agent %s ready: ssh port %d, host key %s",
            self.config.pod,
            self.ssh_port,
            self.host_key.get_fingerprint(),
        )

    async def _owned_services(self) -> list[dict[str, Any]]:
        """The Services pointing at the agent; retried for a while, since the agent's Role
        may be created a moment after its pod starts."""
        delay = 0.05
        for attempt in range(40):
            try:
                return await self.cluster.owned_services()
            except Exception as exc:
                if attempt == 39:
                    raise
                log.info("cannot list services yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        """SIGTERM: sessions reconnect to the next agent pod at once, while connections still
        arriving here go to the original pods until kube-proxy has moved the Service."""
        if self._server is not None:
            self._server.close()
        self.table.claims.clear()
        for conn in list(self.conns.values()):
            conn.close()
        await asyncio.sleep(self.settings.drain)
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for task in list(self._retiring):
            task.cancel()
        await self.router.aclose()

    # ---------------------------------------------------------------------- sessions

    async def authorized(self, session: str, key: asyncssh.SSHKey) -> bool:
        if not SESSION_ID.match(session):
            log.warning("refused user %r: not a session id", session)
            return False
        try:
            text = await self.cluster.client_key(session)
        except Exception as exc:
            log.warning("cannot read the client keys: %s", exc)
            return False
        if text is None:
            log.warning("refused session %s: no key registered", session)
            return False
        try:
            expected = asyncssh.import_public_key(text)
        except (asyncssh.KeyImportError, ValueError):
            log.warning("refused session %s: its registered key is unreadable", session)
            return False
        if expected.public_data != key.public_data:
            log.warning("refused session %s: foreign key %s", session, key.get_fingerprint())
            return False
        return True

    def session_connected(self, session: str, conn: asyncssh.SSHServerConnection) -> None:
        old = self.conns.get(session)
        self.conns[session] = conn
        self.leases.connect(session)
        if old is not None and old is not conn:
            # A reconnect overtook a half-open link: the new connection takes the routes.
            old.close()
        log.info("session %s connected", session)

    def session_lost(
        self, session: str, conn: asyncssh.SSHServerConnection, exc: Exception | None
    ) -> None:
        if self.conns.get(session) is not conn:
            return
        del self.conns[session]
        self.router.stop_warm(session)
        dropped = self.table.release_session(session)
        self.leases.disconnect(session, time.monotonic())
        log.info(
            "session %s lost (%s): %s back to the original pods",
            session,
            exc or "closed",
            ", ".join(dropped) or "nothing",
        )

    async def open_reverse(
        self, session: str, service: str, port: int, peer: tuple[str, int], judge: bool = True
    ) -> tuple[Reader, Writer]:
        conn = self.conns.get(session)
        if conn is None:
            raise ConnectionError(f"session {session} is not connected")
        try:
            reader, writer = await asyncio.wait_for(
                conn.open_connection(
                    service, port, peer[0], peer[1], window=WINDOW, max_pktsize=MAX_PACKET
                ),
                OPEN_TIMEOUT,
            )
        except TimeoutError:
            if not judge:
                raise
            # A session that cannot confirm a channel is frozen or cut off (keepalives would
            # tell the same a few seconds later): drop it now, so its traffic goes to the
            # original pods instead of waiting on it.
            log.warning("session %s does not answer: dropping it", session)
            conn.abort()
            raise
        return reader, writer

    # ------------------------------------------------------------------ crash safety

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick)
            try:
                await self._tick(time.monotonic())
            except Exception:
                log.exception("housekeeping failed")

    async def _tick(self, now: float) -> None:
        loop_now = asyncio.get_running_loop().time()
        self.router.prune_idle(loop_now)
        self.router.warm_up(loop_now)
        expired, due = self.leases.expire(now, self.settings.grace)
        if expired:
            log.info("sessions %s gone for the grace period", ", ".join(expired))
            try:
                await self.cluster.forget_client_keys(expired)
            except Exception as exc:
                log.warning("cannot prune client keys: %s", exc)
        for service in due:
            if self._retry_at.get(service, 0.0) <= now:
                await self._restore(service)
        if (
            not self.deleting_self
            and self.settings.idle_ttl > 0
            and self.leases.idle_for(now) >= self.settings.idle_ttl
        ):
            self.deleting_self = True
            log.info("idle for %.0f s: deleting the agent", self.settings.idle_ttl)
            try:
                await self.cluster.delete_self()
            except Exception as exc:
                log.error("cannot delete the agent: %s", exc)
                self.deleting_self = False
                self.leases.idle_since = now  # try again after another TTL

    async def _restore(self, service: str) -> bool:
        """Point ``service`` back at its original pods. Its agent port keeps forwarding to
        them through the shadow Service for ``drain`` seconds (kube-proxy moves the Service a
        moment later); only then do the listener and the shadow go."""
        async with self._lock(service):
            if self.leases.holders.get(service):
                return False  # reserved again meanwhile
            try:
                await self.cluster.restore(service)
            except Exception as exc:
                log.error("cannot restore service %s: %s", service, exc)
                self._retry_at[service] = time.monotonic() + 5.0
                return False
            self._retry_at.pop(service, None)
            self.leases.forget(service, time.monotonic())
        task = asyncio.create_task(self._retire(service), name=f"retire {service}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return True

    async def _retire(self, service: str) -> None:
        await asyncio.sleep(self.settings.drain)
        async with self._lock(service):
            if self.leases.holders.get(service):
                return  # a session intercepts it again: its listener and shadow stay
            await self.router.close(service)
            try:
                await self.cluster.delete_shadow(service)
            except Exception as exc:
                log.error("cannot delete the shadow of %s: %s", service, exc)

    def _lock(self, service: str) -> asyncio.Lock:
        return self._locks.setdefault(service, asyncio.Lock())

    # ----------------------------------------------------------------------- control

    async def _control(self, process: asyncssh.SSHServerProcess[str]) -> None:
        session = process.get_extra_info("username")
        if process.subsystem != SUBSYSTEM:
            process.stderr.write("only the 'cockpit' subsystem is served here\n")
            process.exit(1)
            return
        ops: dict[str, Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "hello": self.op_hello,
            "reserve": self.op_reserve,
            "route": self.op_route,
            "release": self.op_release,
            "status": self.op_status,
        }
        try:
            async for line in process.stdin:
                try:
                    request = json.loads(line)
                    rid = request.get("id")
                    handler = ops.get(request.get("op"))
                    if handler is None:
                        raise ControlError(f"unknown op {request.get('op')!r}")
                    answer = {"id": rid, "ok": True, **await handler(session, request)}
                except (ControlError, InterceptError) as exc:
                    message = exc.message if isinstance(exc, InterceptError) else str(exc)
                    answer = {"id": rid, "ok": False, "error": message}
                except (ValueError, AttributeError, KeyError, TypeError) as exc:
                    answer = {"id": None, "ok": False, "error": f"bad request: {exc}"}
                process.stdout.write(json.dumps(answer) + "\n")
        except (asyncssh.Error, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                process.exit(0)

    async def op_hello(self, session: str, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "agent": __version__,
            "protocol": PROTOCOL_VERSION,
            "pod": self.config.pod,
            "services": {s: e.ports for s, e in self.router.services.items()},
        }

    async def op_reserve(self, session: str, request: dict[str, Any]) -> dict[str, Any]:
        """Listen for ``service`` (reusing the agent ports its annotation names, if any) and
        count the session as one of its holders."""
        service = str(request["service"])
        ports = [
            ServicePort(int(p["port"]), str(p.get("protocol", "TCP")), p.get("targetPort", 0))
            for p in request["ports"]
        ]
        wanted = {int(k): int(v) for k, v in (request.get("agent_ports") or {}).items()}
        async with self._lock(service):
            current = self.router.services.get(service)
            if wanted:
                mapping = wanted
            elif current is not None and {p.port for p in ports} <= set(current.ports):
                mapping = dict(current.ports)
            else:
                in_use = self.router.ports_in_use() - set(current.ports.values() if current else ())
                mapping = allocate_agent_ports(ports, in_use)
            others = self.router.ports_in_use() - set(current.ports.values() if current else ())
            clash = set(mapping.values()) & others
            if clash:
                raise ControlError(
                    f"agent port {min(clash)} of service '{service}' is already used by "
                    "another service; run 'cockpit down' to reset the namespace"
                )
            try:
                await self.router.open(service, mapping)
            except OSError as exc:
                raise ControlError(f"the agent cannot listen for '{service}': {exc}") from exc
            self.leases.hold(service, session)
            self._retry_at.pop(service, None)
        return {"agent_ports": {str(k): v for k, v in mapping.items()}}

    async def op_route(self, session: str, request: dict[str, Any]) -> dict[str, Any]:
        """Turn this session's intercept of ``service`` on (global or personal) or off."""
        service = str(request["service"])
        if session not in self.leases.holders.get(service, set()):
            raise ControlError(f"session {session} has not reserved service '{service}'")
        if not request.get("on", True):
            self.table.release(service, session)
            return {"routes": self.table.snapshot().get(service, [])}
        mode = request.get("mode", "global")
        if mode == "global":
            claim = Claim(session, "global")
        elif mode == "personal":
            header = str(request.get("header") or DEFAULT_HEADER).lower()
            value = str(request.get("value") or f"cockpit-session={session}")
            claim = Claim(session, "personal", HeaderMatch(header, value))
        else:
            raise ControlError(f"unknown intercept mode {mode!r}")
        self.table.claim(service, claim)
        return {"routes": self.table.snapshot().get(service, [])}

    async def op_release(self, session: str, request: dict[str, Any]) -> dict[str, Any]:
        """The session is done with ``service``; the last holder out restores it."""
        service = str(request["service"])
        self.table.release(service, session)
        self.router.stop_warm(session, service)
        last = self.leases.drop(service, session, time.monotonic())
        restored = await self._restore(service) if last else False
        return {"restored": restored}

    async def op_status(self, session: str, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "pod": self.config.pod,
            "routes": self.table.snapshot(),
            "services": {s: e.ports for s, e in self.router.services.items()},
            "sessions": sorted(self.conns),
            "served": {f"{s}/{t}": n for (s, t), n in sorted(self.router.served.items())},
            "outbound": dict(sorted(self.outbound.forwarded.items())),
            "outbound_refused": self.outbound.refused,
        }
