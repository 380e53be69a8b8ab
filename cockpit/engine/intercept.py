"""A session's intercept of its service: deploy or reuse the namespace's agent, hold one SSH
connection to it (reconnecting by itself and re-establishing the routes), point the Service at
the agent once, and toggle global/personal routing with no Kubernetes write.

Order of ``start`` is what keeps bad input from changing the cluster: access review and the
Service's checks come before the agent is deployed; the agent listens before the Service is
pointed at it; the shadow Service has endpoints before the Service moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cockpit.adapters.agent import AgentPod
from cockpit.core.commands import InterceptMode
from cockpit.core.events import ConnectionChanged, Event, Level, Notice
from cockpit.core.intercept import (
    DEFAULT_HEADER,
    DEFAULT_VALUE_TEMPLATE,
    HeaderMatch,
    InterceptRecord,
    ServicePort,
    record_of,
    service_ports,
)
from cockpit.errors import CockpitError, InterceptError, TunnelError

log = logging.getLogger(__name__)


class AgentOps(Protocol):
    """What the engine needs of the cluster side (``cockpit.adapters.agent.AgentCluster``).
    Blocking: called in a thread."""

    def check_access(self) -> None: ...

    def ensure_agent(self, timeout: float = 60.0) -> tuple[AgentPod, bool]: ...

    def wait_for_agent(self, timeout: float = 60.0, exclude: Iterable[str] = ()) -> AgentPod: ...

    def register_key(self, session: str, public_key: str) -> None: ...

    def unregister_key(self, session: str) -> None: ...

    def read_service(self, service: str) -> dict[str, Any]: ...

    def prepare_shadow(self, svc: dict[str, Any]) -> bool: ...

    def point_at_agent(
        self,
        service: str,
        agent_ports: dict[int, int],
        svc: dict[str, Any] | None = None,
        shadow_ready: bool = False,
    ) -> InterceptRecord: ...

    def delete_shadow(self, service: str) -> bool: ...

    def delete_agent(self) -> list[str]: ...


class AgentChannel(Protocol):
    """What the engine needs of one SSH connection (``cockpit.adapters.ssh.AgentLink``)."""

    async def hello(self) -> dict[str, Any]: ...

    async def reserve(
        self,
        service: str,
        ports: list[ServicePort],
        agent_ports: Mapping[int, int] | None = None,
    ) -> dict[int, int]: ...

    async def route(
        self, service: str, mode: InterceptMode, on: bool, header: str | None = None,
        value: str | None = None,
    ) -> list[dict[str, str]]: ...  # fmt: skip

    async def release(self, service: str) -> bool: ...

    async def expose(self, service: str, port: int, local_host: str, local_port: int) -> None: ...

    async def connect_direct(
        self, host: str, port: int, protocol_factory: Callable[[], asyncio.Protocol]
    ) -> Any: ...

    async def wait_closed(self) -> None: ...

    async def aclose(self) -> None: ...

    @property
    def closed(self) -> bool: ...


Connector = Callable[[AgentPod, str], Awaitable[AgentChannel]]
"""(agent pod, session id) -> an open channel authenticated with the session's key (which the
connector registered with ``AgentOps.register_key``)."""


@dataclass(frozen=True, slots=True)
class InterceptResult:
    ok: bool
    message: str


class InterceptSession:
    """The intercept of ``service`` by session ``session_id``, whose local process listens on
    ``local_host:local_port`` (the Service's first port; ``extra_ports`` maps further Service
    ports to local ones — a port mapped nowhere keeps reaching the original pods)."""

    def __init__(
        self,
        ops: AgentOps,
        connect: Connector,
        *,
        service: str,
        session_id: str,
        local_port: int,
        local_host: str = "127.0.0.1",
        extra_ports: Mapping[int, int] | None = None,
        header: str = DEFAULT_HEADER,
        value_template: str = DEFAULT_VALUE_TEMPLATE,
        publish: Callable[[Event], None] = lambda event: None,
        agent_timeout: float = 60.0,
        max_retry_delay: float = 1.0,
    ) -> None:
        self.ops = ops
        self.connect = connect
        self.service = service
        self.session_id = session_id
        self.local_host = local_host
        self.local_port = local_port
        self.extra_ports = dict(extra_ports or {})
        self.match = HeaderMatch.for_session(session_id, header, value_template)
        self.publish = publish
        self.agent_timeout = agent_timeout
        self.max_retry_delay = max_retry_delay
        self.mode: InterceptMode | None = None  # what the user asked for; None = off
        self.link: AgentChannel | None = None
        self.pod: AgentPod | None = None
        self.record: InterceptRecord | None = None
        self.created_agent = False
        self._made_shadow = False
        self.connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, mode: InterceptMode | None = None) -> None:
        """Set everything up (the intercept on in ``mode``, or off); a CockpitError (one line)
        leaves the cluster as it was."""
        self._say("checking access and the service")
        await asyncio.to_thread(self.ops.check_access)
        svc = await asyncio.to_thread(self.ops.read_service, self.service)  # before any write
        self._state("connecting")
        # The shadow Service does not need the agent: both start at once.
        setup = asyncio.gather(
            asyncio.to_thread(self.ops.ensure_agent, self.agent_timeout),
            asyncio.to_thread(self.ops.prepare_shadow, svc),
            return_exceptions=True,
        )
        try:
            agent, shadow = await asyncio.shield(setup)
        except asyncio.CancelledError:
            # A quit meanwhile: their threads run on regardless, so what they make must be
            # given back once they are done, as after a failed start.
            with contextlib.suppress(BaseException):
                agent, shadow = await asyncio.shield(setup)
                self._made_shadow = shadow is True
                self.created_agent = not isinstance(agent, BaseException) and agent[1]
                await asyncio.shield(self._abandon())
            raise
        self._made_shadow = shadow is True
        try:
            if isinstance(agent, BaseException):
                raise agent
            if isinstance(shadow, BaseException):
                raise shadow
            pod, self.created_agent = agent
            await self._attach(pod, svc)
            if mode is not None:
                await self._apply(mode, True)
                self.mode = mode
        except BaseException:
            if not isinstance(agent, BaseException):
                self.created_agent = agent[1]
            await self._abandon()
            raise
        self._state("connected")
        self._say(f"{self.service}: {self.describe()}")
        self._supervisor = asyncio.create_task(self._supervise(), name="intercept tunnel")

    async def _abandon(self) -> None:
        """A start that failed half-way: give back what it took."""
        with contextlib.suppress(Exception):
            if self.link is not None and not self.link.closed:
                await asyncio.wait_for(self.link.release(self.service), 10)
        await self._close_link()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.ops.unregister_key, self.session_id)
        if self._made_shadow and self.record is None:
            # Made for this start, and the Service never pointed at the agent: not in use.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.ops.delete_shadow, self.service)
        if self.created_agent:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.ops.delete_agent)

    async def _attach(self, pod: AgentPod, svc: dict[str, Any] | None = None) -> None:
        """Connect to ``pod``, make sure the agent listens for the Service and the Service
        points at it, and expose the local ports. ``svc``: the Service as just read."""
        link = await self.connect(pod, self.session_id)
        try:
            await link.hello()
            fresh = svc is not None
            if svc is None:
                svc = await asyncio.to_thread(self.ops.read_service, self.service)
            ports = list(service_ports(svc))
            existing = record_of(svc)
            agent_ports = await link.reserve(
                self.service, ports, existing.agent_ports() if existing else None
            )
            self.record = existing or await asyncio.to_thread(
                self.ops.point_at_agent, self.service, agent_ports, svc, fresh
            )
            for port, local in self._local_ports(ports).items():
                await link.expose(self.service, port, self.local_host, local)
        except BaseException:
            with contextlib.suppress(Exception):
                await link.aclose()
            raise
        self.link, self.pod = link, pod
        self.connected.set()

    def _local_ports(self, ports: list[ServicePort]) -> dict[int, int]:
        out = {ports[0].port: self.local_port} if ports else {}
        out.update({p.port: self.extra_ports[p.port] for p in ports if p.port in self.extra_ports})
        return out

    async def stop(self) -> None:
        """Intercept off, Service given back (by the agent, if this was its last session),
        key removed. Safe to call twice; shielded from cancellation."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._teardown())
        await asyncio.shield(self._stopping)

    async def _teardown(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        link = self.link
        if link is not None and not link.closed:
            try:
                restored = await asyncio.wait_for(link.release(self.service), 15)
                self._say(
                    f"{self.service}: intercept released"
                    + ("; service restored" if restored else "; other sessions still use it")
                )
            except (CockpitError, TimeoutError) as exc:
                # The agent restores it after its grace period: nothing is black-holed.
                self._say(f"{self.service}: could not release the intercept: {exc}", Level.WARNING)
        await self._close_link()
        with contextlib.suppress(CockpitError):
            await asyncio.to_thread(self.ops.unregister_key, self.session_id)
        self._state("disconnected")

    async def _close_link(self) -> None:
        link, self.link = self.link, None
        self.connected.clear()
        if link is not None:
            with contextlib.suppress(Exception):
                await link.aclose()

    # --------------------------------------------------------------------- toggling

    def describe(self) -> str:
        if self.mode is None:
            return "intercept off (cluster traffic goes to the original pods)"
        if self.mode == "global":
            return "intercepted: every request comes here"
        return f"intercepted: requests with '{self.match.name}: {self.match.value}' come here"

    async def toggle(self, mode: InterceptMode, on: bool | None = None) -> InterceptResult:
        """Turn the intercept on in ``mode`` or off (``on=None``: flip). A routing change in
        the agent only; refused (one line) when it would overlap another session's."""
        want = (self.mode != mode) if on is None else on
        async with self._lock:
            if self.link is None or self.link.closed:
                return InterceptResult(False, "the tunnel to the agent is reconnecting; try again")
            try:
                if want:
                    await self._apply(mode, True)
                    self.mode = mode
                elif self.mode is not None:
                    await self._apply(self.mode, False)
                    self.mode = None
            except InterceptError as exc:
                return InterceptResult(False, exc.one_line())
            except TunnelError as exc:
                return InterceptResult(False, exc.one_line())
        self._say(f"{self.service}: {self.describe()}")
        return InterceptResult(True, f"{self.service}: {self.describe()}")

    async def _apply(self, mode: InterceptMode, on: bool) -> None:
        assert self.link is not None
        personal = mode == "personal"
        await self.link.route(
            self.service,
            mode,
            on,
            header=self.match.name if personal else None,
            value=self.match.value if personal else None,
        )

    # ------------------------------------------------------------------ reconnecting

    async def _supervise(self) -> None:
        """Wait for the connection to drop; reconnect (the same pod, or its replacement) and
        re-establish the routes, with a short backoff, until stopped."""
        while True:
            link = self.link
            if link is not None:
                await link.wait_closed()
            await self._close_link()
            lost_at = time.monotonic()
            self._state("connecting")
            self._say(f"{self.service}: tunnel to the agent lost; reconnecting", Level.WARNING)
            delay = 0.05
            exclude = {self.pod.name} if self.pod is not None else set()
            while True:
                try:
                    await self._reconnect(exclude)
                    break
                except asyncio.CancelledError:
                    raise
                except CockpitError as exc:
                    self._state(f"failed: {exc.one_line()}")
                    if "deleted from namespace" in exc.message:
                        self._say(
                            f"{self.service}: the agent was removed; intercept off", Level.ERROR
                        )
                        self.mode = None
                        return
                except Exception as exc:  # a bug must not end the reconnects
                    log.exception("reconnect failed")
                    self._state(f"failed: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                exclude = set()  # the old pod may be fine after all (a network cut)
            self._state("connected")
            self._say(
                f"{self.service}: tunnel back after {time.monotonic() - lost_at:.1f} s; "
                f"{self.describe()}"
            )

    async def _reconnect(self, exclude: set[str]) -> None:
        pod = await asyncio.to_thread(self.ops.wait_for_agent, 2.0, exclude)
        await self._attach(pod)
        if self.mode is not None:
            try:
                await self._apply(self.mode, True)
            except InterceptError as exc:
                # Someone took the service while we were away: stay connected, intercept off.
                self._say(f"{self.service}: intercept not restored: {exc.one_line()}", Level.ERROR)
                self.mode = None

    # ------------------------------------------------------------------------ events

    def _state(self, state: str) -> None:
        self.publish(ConnectionChanged("agent", state))

    def _say(self, text: str, level: Level = Level.INFO) -> None:
        self.publish(Notice("intercept", text, level))


def kube_intercept(
    *,
    kubeconfig: str | None,
    context: str | None,
    namespace: str,
    service: str,
    session_id: str,
    local_port: int,
    settings: Any = None,
    **options: Any,
) -> InterceptSession:
    """An InterceptSession on the real adapters: the kubeconfig's API server, port-forwards
    to the agent pod, asyncssh. Blocking (reads the kubeconfig): call it off the event loop."""
    from cockpit.adapters.agent import AgentCluster, ApiJson
    from cockpit.adapters.portforward import ApiServer, PodTunnel
    from cockpit.adapters.ssh import tunnel_connector
    from cockpit.core.agent_spec import SSH_PORT, AgentSettings

    settings = settings or AgentSettings()
    ops = AgentCluster(ApiJson.from_kubeconfig(kubeconfig, context), namespace, settings)
    api = ApiServer.from_kubeconfig(kubeconfig, context)
    connect = tunnel_connector(
        lambda pod: PodTunnel(api, namespace, pod),
        ops.register_key,
        port=SSH_PORT,
        keepalive=settings.keepalive,
        keepalive_count=settings.keepalive_count,
    )
    return InterceptSession(
        ops, connect, service=service, session_id=session_id, local_port=local_port, **options
    )
