"""The session's forwards: a local 127.0.0.x listener per remote service port, publishing
``ForwardChanged``; and the local service's environment pointed at them. Each new connection
goes through the agent's SSH tunnel to the Service while the session has one, else through an
API-server port-forward to one of the service's ready pods (sticky to one, re-picked when it
goes): the addresses the local process was given never change.

Each service gets its own loopback address (127.0.0.2, .3, ... in name order) so every
forward can keep the service's own port; ``cockpit env`` and ``cockpit up`` use the same rule
and so agree on the addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cockpit.adapters.envsource import EnvSource
from cockpit.adapters.portforward import (
    PORT_FORWARD,
    TUNNEL,
    DirectRoute,
    ForwardStats,
    NoReadyPodError,
    PodTarget,
    PortForwarder,
    PortForwardListener,
    preferred_port,
)
from cockpit.adapters.servicecatalog import Backend, ServiceCatalog, ServicePort, ServiceSpec
from cockpit.core.envimport import (
    ClusterAddresses,
    ForwardedPort,
    ImportedEnv,
    ServiceAddress,
    format_dotenv,
    import_env,
)
from cockpit.core.events import Event, ForwardChanged, Level, Notice
from cockpit.errors import CockpitError, NotFoundError

log = logging.getLogger(__name__)

FIRST_HOST = 2  # 127.0.0.1 stays the local service's own


def loopback_host(index: int) -> str:
    """The address of the ``index``-th forwarded service (0 -> 127.0.0.2)."""
    n = FIRST_HOST + index
    return f"127.0.{n // 254}.{n % 254}" if n >= 254 else f"127.0.0.{n}"


def forwardable(
    services: Sequence[ServiceSpec], exclude: Collection[str] = ()
) -> list[ServiceSpec]:
    """The services that get a forward, in address order: by name, with a TCP port."""
    return sorted(
        (s for s in services if s.name not in exclude and any(_tcp(p) for p in s.ports)),
        key=lambda s: s.name,
    )


def _tcp(port: ServicePort) -> bool:
    return port.protocol.upper() == "TCP"  # the API server forwards TCP only


class DirectChannels(Protocol):
    """The session's SSH connection to the agent, as the forwards use it
    (``cockpit.adapters.ssh.AgentLink``)."""

    @property
    def closed(self) -> bool: ...

    async def connect_direct(
        self, host: str, port: int, protocol_factory: Callable[[], asyncio.Protocol]
    ) -> Any: ...


TunnelSource = Callable[[], DirectChannels | None]
"""The live tunnel of the session, or None while it has none (no intercept, reconnecting)."""


def _no_tunnel() -> DirectChannels | None:
    return None


class ServiceForward:
    """One service port's forward; the listener asks it which pod each connection goes to."""

    def __init__(
        self,
        spec: ServiceSpec,
        port: ServicePort,
        publish: Callable[[ForwardChanged], None],
        *,
        wait_for_pod: float = 2.0,
        cooldown: float = 5.0,
    ) -> None:
        self.spec = spec
        self.port = port
        self.name = f"{spec.name}:{port.port}"
        self.publish = publish
        self.wait_for_pod = wait_for_pod
        self.cooldown = cooldown
        self.listener: PortForwardListener | None = None
        self.backends: tuple[Backend, ...] | None = None  # None until the first answer
        self.current: PodTarget | None = None
        self.failure = ""  # why there is no pod, when the watch itself failed
        self.stopped = False  # the user turned the listener off (``f``)
        self.tunnel: TunnelSource = _no_tunnel
        self._bad: dict[str, float] = {}  # pod -> until when it is avoided
        self._changed = asyncio.Event()
        self._last: ForwardChanged | None = None

    # -- TargetPicker --

    async def pick(self, exclude: frozenset[str]) -> PodTarget:
        deadline = time.monotonic() + self.wait_for_pod
        while True:
            target = self._choose(exclude)
            if target is not None:
                return target
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoReadyPodError(self._no_pod_reason())
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def failed(self, target: PodTarget, error: CockpitError) -> None:
        self._bad[target.pod] = time.monotonic() + self.cooldown
        log.info("forward %s: pod %s failed: %s", self.name, target.pod, error.one_line())
        if self.current is not None and self.current.pod == target.pod:
            self.current = None
            self._choose(frozenset())
            self.report()

    def direct(self) -> DirectRoute | None:
        link = self._link()
        if link is None:
            return None
        host, port = self.service_host, self.port.port

        async def connect(factory: Callable[[], asyncio.Protocol]) -> Any:
            return await link.connect_direct(host, port, factory)

        return connect

    # -- routes --

    def _link(self) -> DirectChannels | None:
        link = self.tunnel()
        return link if link is not None and not link.closed else None

    @property
    def service_host(self) -> str:
        """The Service's name as the agent resolves it: load-balanced like in-cluster traffic."""
        return f"{self.spec.name}.{self.spec.namespace}.svc"

    @property
    def route(self) -> str:
        """The route a new connection takes now."""
        return TUNNEL if self._link() is not None else PORT_FORWARD

    # -- pod choice --

    def _target(self, backend: Backend) -> PodTarget | None:
        port = backend.ports.get(self.port.name)
        if port is None and isinstance(self.port.target_port, int):
            port = self.port.target_port
        return None if port is None else PodTarget(self.spec.namespace, backend.pod, port)

    def _choose(self, exclude: frozenset[str]) -> PodTarget | None:
        """The current pod while it is ready; else the first ready one not failed lately
        (or, when all failed lately, the first ready one: a retry beats no answer). A retry
        that excludes pods does not move the forward's current pod."""
        now = time.monotonic()
        ready = [b for b in self.backends or () if b.pod not in exclude]
        fresh = [b for b in ready if self._bad.get(b.pod, 0.0) <= now]
        if self.current is not None:
            for backend in fresh:
                if backend.pod == self.current.pod:
                    self.current = self._target(backend) or self.current
                    return self.current
        for backend in fresh or ready:
            target = self._target(backend)
            if target is not None:
                if self.current is None or not exclude:
                    self.current = target
                return target
        return None

    def update(self, backends: tuple[Backend, ...]) -> None:
        """The ready pods changed (from the watch)."""
        self.backends = backends
        self.failure = ""
        pods = {b.pod for b in backends}
        self._bad = {p: t for p, t in self._bad.items() if p in pods}
        if self.current is not None and self.current.pod not in pods:
            log.info("forward %s: pod %s is no longer ready", self.name, self.current.pod)
            self.current = None
        self._choose(frozenset())
        self._changed.set()
        self.report()

    def fail(self, reason: str) -> None:
        self.failure = reason
        self.current = None
        self._changed.set()
        self.report()

    def _no_pod_reason(self) -> str:
        if self.failure:
            return self.failure
        if self.backends is None:
            return f"waiting for the endpoints of {self.spec.name}"
        return f"no ready pod behind {self.spec.name}"

    # -- reporting --

    @property
    def local(self) -> str:
        if self.listener is None:
            return ""
        host, port = self.listener.address
        return f"{host}:{port}"

    @property
    def state(self) -> str:
        if self.stopped:
            return "stopped"
        if self.listener is None:
            return "connecting"
        if self.current is not None:
            return "listening"
        if self.backends is None and not self.failure:
            return "connecting"
        return f"failed: {self._no_pod_reason()}"

    @property
    def stats(self) -> ForwardStats:
        return self.listener.stats if self.listener is not None else ForwardStats()

    async def stop_listening(self) -> None:
        """Close the listener (cutting its connections); ``listen_again`` reopens it."""
        if self.listener is None or self.stopped:
            return
        # The local process's env names this address: pin it so a restart binds it again.
        self.listener.host, self.listener.port = self.listener.address
        await self.listener.close()
        self.stopped = True
        self.report()

    async def listen_again(self) -> None:
        """Listen again at the address the forward had; CockpitError if it is taken now."""
        if self.listener is None or not self.stopped:
            return
        wanted = self.listener.address
        await self.listener.start()
        if self.listener.address != wanted:  # bind_loopback fell back to another port
            await self.listener.close()
            self.listener.host, self.listener.port = wanted
            raise CockpitError(
                f"cannot forward {self.name} on {wanted[0]}:{wanted[1]} again: the address "
                "is taken (the local process is configured with it); free it and retry"
            )
        self.stopped = False
        self.report()

    def event(self) -> ForwardChanged:
        stats = self.stats
        tunnel = self.listener.routes[TUNNEL] if self.listener is not None else ForwardStats()
        route = self.route
        if route == TUNNEL:
            remote = f"{self.service_host}:{self.port.port}"
        else:
            remote = str(self.current) if self.current is not None else ""
        return ForwardChanged(
            name=self.name,
            local=self.local,
            remote=remote,
            state=self.state,
            connections=stats.connections,
            bytes_in=stats.bytes_in,
            bytes_out=stats.bytes_out,
            route=route,
            tunnel_connections=tunnel.connections,
            tunnel_bytes_in=tunnel.bytes_in,
            tunnel_bytes_out=tunnel.bytes_out,
        )

    def report(self) -> None:
        """Publish ForwardChanged if anything shown changed since the last one."""
        event = self.event()
        if event != self._last:
            self._last = event
            self.publish(event)


class ServiceForwards:
    """Every forward of a session: started together, stopped together."""

    def __init__(
        self,
        forwarder: PortForwarder,
        catalog: ServiceCatalog,
        namespace: str,
        publish: Callable[[Event], None],
        *,
        wait_for_pod: float = 2.0,
        report_every: float = 0.5,
        cluster_domain: str = "cluster.local",
    ) -> None:
        self.forwarder = forwarder
        self.catalog = catalog
        self.namespace = namespace
        self.publish = publish
        self.wait_for_pod = wait_for_pod
        self.report_every = report_every
        self.cluster_domain = cluster_domain
        self.forwards: list[ServiceForward] = []
        self.tunnel: TunnelSource = _no_tunnel
        self._tasks: list[asyncio.Task[None]] = []

    async def start(
        self, services: Sequence[str] | None = None, *, exclude: Collection[str] = ()
    ) -> ClusterAddresses:
        """Forward ``services`` (default: every service of the namespace but ``exclude``);
        NotFoundError for a name that does not exist. Returns where each one listens."""
        if services is None:
            specs = await self.catalog.list(self.namespace)
        else:
            specs = [await self.catalog.get(self.namespace, name) for name in services]
        groups: dict[str, list[ServiceForward]] = {}
        try:
            for index, spec in enumerate(forwardable(specs, exclude)):
                host = loopback_host(index)
                group = []
                for port in spec.ports:
                    if not _tcp(port):
                        continue
                    fwd = ServiceForward(spec, port, self.publish, wait_for_pod=self.wait_for_pod)
                    fwd.tunnel = self.tunnel
                    fwd.listener = await self.forwarder.listen(host, port.port, fwd)
                    self._check_address(fwd, host, port.port)
                    self.forwards.append(fwd)
                    group.append(fwd)
                    fwd.report()
                groups[spec.name] = group
            self._tasks.append(asyncio.create_task(self._follow(groups)))
            self._tasks.append(asyncio.create_task(self._report_loop()))
        except BaseException:
            await self.stop()
            raise
        return self.addresses()

    def _check_address(self, fwd: ServiceForward, host: str, port: int) -> None:
        wanted = f"{host}:{preferred_port(port)}"
        if fwd.local != wanted:
            self.publish(
                Notice(
                    key=f"forward-address:{fwd.name}",
                    text=f"forward {fwd.name} listens on {fwd.local} ({wanted} was taken): "
                    "a .env file written by `cockpit env` points at the wrong address",
                    level=Level.WARNING,
                )
            )

    def addresses(self) -> ClusterAddresses:
        services: dict[str, ServiceAddress] = {}
        for fwd in self.forwards:
            if fwd.listener is None:
                continue
            host, port = fwd.listener.address
            known = services.get(fwd.spec.name)
            forwarded = ForwardedPort(fwd.port.port, port, fwd.port.name)
            ports = (*known.ports, forwarded) if known else (forwarded,)
            services[fwd.spec.name] = ServiceAddress(fwd.spec.name, host, ports)
        return ClusterAddresses(self.namespace, services, self.cluster_domain)

    def use_tunnel(self, tunnel: TunnelSource | None) -> None:
        """New connections go through ``tunnel`` whenever it answers a live connection (each
        falls back to a port-forward when it is down or refuses), or, with None, through
        port-forwards only. The listeners and their addresses stay as they are."""
        self.tunnel = tunnel or _no_tunnel
        for fwd in self.forwards:
            fwd.tunnel = self.tunnel
            fwd.report()

    def get(self, name: str) -> ServiceForward | None:
        """The forward called ``name`` ("store:8080"), or the first of service ``name``."""
        for fwd in self.forwards:
            if name in (fwd.name, fwd.spec.name):
                return fwd
        return None

    async def toggle(self, service: str) -> str:
        """Stop the listeners of ``service`` (or of one forward, "store:8080"), or, when they
        are all stopped, listen again at the same addresses; a one-line summary."""
        group = [fwd for fwd in self.forwards if service in (fwd.name, fwd.spec.name)]
        if not group:
            known = ", ".join(sorted({fwd.spec.name for fwd in self.forwards})) or "none"
            raise NotFoundError(f"no port-forward for {service!r} (forwarded: {known})")
        addresses = ", ".join(fwd.local for fwd in group)
        if any(not fwd.stopped for fwd in group):
            for fwd in group:
                await fwd.stop_listening()
            return f"{service}: port-forward stopped ({addresses} refuses connections)"
        for fwd in group:
            await fwd.listen_again()
        return f"{service}: port-forward listening again on {addresses}"

    async def _follow(self, groups: Mapping[str, list[ServiceForward]]) -> None:
        """Keep each forward's pods current, from one watch of the namespace's Endpoints."""
        if not groups:
            return
        try:
            async for changes in self.catalog.backends(self.namespace, groups):
                for name, backends in changes.items():
                    for fwd in groups.get(name, ()):
                        fwd.update(backends)
        except CockpitError as exc:
            for group in groups.values():
                for fwd in group:
                    fwd.fail(exc.one_line())
        except Exception as exc:  # a bug or a library surprise: say so, keep the session
            log.exception("watching the pods behind the forwards failed")
            for group in groups.values():
                for fwd in group:
                    fwd.fail(f"watching the pods behind the forwards failed: {exc}")

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.report_every)
            for fwd in self.forwards:
                fwd.report()

    async def stop(self) -> None:
        """Close every listener and watch; safe to call twice, finishes even when cancelled."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        forwards = list(self.forwards)

        async def close_all() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)
            for fwd in forwards:
                if fwd.listener is not None:
                    await fwd.listener.close()

        await asyncio.shield(close_all())


def plan_addresses(
    services: Sequence[ServiceSpec],
    namespace: str,
    *,
    exclude: Collection[str] = (),
    cluster_domain: str = "cluster.local",
) -> ClusterAddresses:
    """Where ``ServiceForwards.start(exclude=...)`` listens when every preferred port is free
    (it says so with a Notice when one is not): what ``cockpit env`` writes into a .env file,
    valid while ``cockpit up`` runs, before or after this is called."""
    services_out: dict[str, ServiceAddress] = {}
    for index, spec in enumerate(forwardable(services, exclude)):
        ports = tuple(
            ForwardedPort(p.port, preferred_port(p.port), p.name) for p in spec.ports if _tcp(p)
        )
        services_out[spec.name] = ServiceAddress(spec.name, loopback_host(index), ports)
    return ClusterAddresses(namespace, services_out, cluster_domain)


async def imported_env(
    source: EnvSource,
    namespace: str,
    service: str,
    addresses: ClusterAddresses,
    *,
    container: str | None = None,
) -> ImportedEnv:
    """The environment of ``service``'s Deployment for a local run, pointed at ``addresses``.
    Logs names and sources only: secret values never reach a log."""
    inputs = await source.read(namespace, service, container=container)
    env = import_env(
        inputs.container,
        cluster=addresses,
        config_maps=inputs.config_maps,
        secrets=inputs.secrets,
        fields=inputs.fields,
        resources=inputs.resources,
        what=inputs.what,
    )
    log.info("env of %s: %s", inputs.what, env.summary())
    for note in env.notes:
        log.info("env of %s: %s", inputs.what, note)
    return env


async def env_file(
    source: EnvSource,
    catalog: ServiceCatalog,
    namespace: str,
    service: str,
    *,
    container: str | None = None,
) -> tuple[str, ImportedEnv]:
    """``cockpit env SERVICE``: the .env text of ``service``'s Deployment pointed at the
    addresses ``cockpit up SERVICE`` will forward on, and the import itself."""
    await catalog.get(namespace, service)  # one clear line for an unknown service
    addresses = plan_addresses(await catalog.list(namespace), namespace, exclude={service})
    env = await imported_env(source, namespace, service, addresses, container=container)
    header = [
        f"cockpit env {service}: namespace {namespace}",
        "The addresses are the port-forwards of `cockpit up`; they answer while it runs.",
        "Holds values of Secrets: keep this file out of version control.",
        *(f"note: {note}" for note in env.notes),
    ]
    return format_dotenv(env, header), env


@dataclass(frozen=True, slots=True)
class Outbound:
    """What a session's local process needs to reach the cluster: the running forwards and
    its Deployment's environment pointed at them (``env.as_dict()`` goes under cockpit.yaml's
    own ``env``, which wins)."""

    forwards: ServiceForwards
    env: ImportedEnv


async def start_outbound(
    forwarder: PortForwarder,
    catalog: ServiceCatalog,
    source: EnvSource,
    namespace: str,
    service: str,
    publish: Callable[[Event], None],
    *,
    container: str | None = None,
) -> Outbound:
    """Forward every other service of the namespace and import ``service``'s environment;
    stop with ``outbound.forwards.stop()`` (then ``forwarder.close()``)."""
    forwards = ServiceForwards(forwarder, catalog, namespace, publish)
    addresses = await forwards.start(exclude={service})
    try:
        env = await imported_env(source, namespace, service, addresses, container=container)
    except BaseException:
        await forwards.stop()
        raise
    return Outbound(forwards, env)
