"""Services of a namespace and the ready pods behind each (from its Endpoints), for the
port-forwards: read once, or followed with a watch that runs in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cockpit.errors import AccessDeniedError, ClusterError, CockpitError, NotFoundError

log = logging.getLogger(__name__)

# A watch request ends server-side after this long and is re-opened: it bounds how long
# a stopped watch thread lingers.
_WATCH_SECONDS = 20


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" when the Service's only port is unnamed
    port: int
    target_port: int | str
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    namespace: str
    ports: tuple[ServicePort, ...]
    selector: Mapping[str, str] = field(default_factory=dict)
    cluster_ip: str = ""


@dataclass(frozen=True, slots=True)
class Backend:
    """A ready pod behind a service: its name and the container port of each service port
    (keyed by the service port's name, "" for an unnamed one)."""

    pod: str
    ports: Mapping[str, int]


class ServiceCatalog(Protocol):
    """What the forwards need to know about services; ``KubeServiceCatalog`` is the real one."""

    async def get(self, namespace: str, name: str) -> ServiceSpec:
        """One service; NotFoundError (one line) when it does not exist."""
        ...

    async def list(self, namespace: str) -> list[ServiceSpec]:
        """Every service of the namespace, by name."""
        ...

    def backends(
        self, namespace: str, names: Collection[str]
    ) -> AsyncIterator[Mapping[str, tuple[Backend, ...]]]:
        """The ready pods behind each of the services ``names`` now (every name), then those
        of the ones that changed, after every change: one watch for them all."""
        ...


def map_api_error(exc: Exception, what: str) -> CockpitError:
    """A kubernetes ApiException (or network error) as one of ours, one line."""
    status = getattr(exc, "status", None)
    if status == 404:
        return NotFoundError(f"{what} not found")
    if status in (401, 403):
        return AccessDeniedError(f"not allowed to read {what}")
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return ClusterError(f"cannot read {what}: {reason}")


def _service_spec(obj: Any) -> ServiceSpec:
    spec = obj.spec
    ports = tuple(
        ServicePort(
            p.name or "",
            int(p.port),
            p.target_port if p.target_port is not None else int(p.port),
            p.protocol or "TCP",
        )
        for p in spec.ports or ()
    )
    return ServiceSpec(
        obj.metadata.name,
        obj.metadata.namespace,
        ports,
        dict(spec.selector or {}),
        spec.cluster_ip or "",
    )


def ready_backends(endpoints: Any) -> tuple[Backend, ...]:
    """The ready pod addresses of an Endpoints object, sorted by pod name."""
    found: dict[str, dict[str, int]] = {}
    for subset in (endpoints.subsets if endpoints is not None else None) or ():
        ports = {p.name or "": int(p.port) for p in subset.ports or ()}
        for address in subset.addresses or ():
            ref = address.target_ref
            if ref is None or ref.kind != "Pod":
                continue  # an address without a pod cannot be port-forwarded to
            found.setdefault(ref.name, {}).update(ports)
    return tuple(Backend(pod, ports) for pod, ports in sorted(found.items()))


class KubeServiceCatalog:
    """ServiceCatalog over the official client (``kubernetes.client.ApiClient``)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core: Any = client.CoreV1Api(api_client)

    async def get(self, namespace: str, name: str) -> ServiceSpec:
        try:
            obj = await asyncio.to_thread(
                self.core.read_namespaced_service, name, namespace, _request_timeout=15
            )
        except Exception as exc:
            raise map_api_error(exc, f"service '{name}' in namespace '{namespace}'") from exc
        return _service_spec(obj)

    async def list(self, namespace: str) -> list[ServiceSpec]:
        try:
            result = await asyncio.to_thread(
                self.core.list_namespaced_service, namespace, _request_timeout=15
            )
        except Exception as exc:
            raise map_api_error(exc, f"services of namespace '{namespace}'") from exc
        return sorted((_service_spec(o) for o in result.items), key=lambda s: s.name)

    async def container_port(self, spec: ServiceSpec) -> int | None:
        """The container port behind the service's first port: its targetPort, or the port a
        named one ("http") has in the ready pods; None when no ready pod says."""
        if not spec.ports:
            return None
        first = spec.ports[0]
        if isinstance(first.target_port, int):
            return first.target_port
        try:
            endpoints = await asyncio.to_thread(
                self.core.read_namespaced_endpoints, spec.name, spec.namespace, _request_timeout=15
            )
        except Exception as exc:
            raise map_api_error(exc, f"endpoints of service '{spec.name}'") from exc
        found = [b.ports[first.name] for b in ready_backends(endpoints) if first.name in b.ports]
        return found[0] if found else None

    async def backends(
        self, namespace: str, names: Collection[str]
    ) -> AsyncIterator[Mapping[str, tuple[Backend, ...]]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, tuple[Backend, ...]] | CockpitError] = asyncio.Queue()
        stop = threading.Event()
        wanted = frozenset(names)

        def deliver(item: dict[str, tuple[Backend, ...]] | CockpitError) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

        thread = threading.Thread(
            target=self._follow,
            args=(namespace, wanted, deliver, stop),
            name=f"endpoints {namespace}",
            daemon=True,
        )
        thread.start()
        last: dict[str, tuple[Backend, ...]] | None = None  # None: nothing said yet
        try:
            while True:
                item = await queue.get()
                if isinstance(item, CockpitError):
                    raise item
                if last is None:
                    last = dict(item)
                    yield item
                    continue
                # A relist repeats every name: pass on only what changed.
                changed = {name: b for name, b in item.items() if last.get(name) != b}
                if changed:
                    last.update(changed)
                    yield changed
        finally:
            stop.set()

    def _follow(
        self,
        namespace: str,
        names: frozenset[str],
        deliver: Callable[[dict[str, tuple[Backend, ...]] | CockpitError], None],
        stop: threading.Event,
    ) -> None:
        """Thread body: list the namespace's Endpoints, then watch from that version (one
        request for every service: an idle session re-opens one watch, not one per service);
        list again when the watch expires."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        watch_cls: Any = watch.Watch  # untyped
        delay = 0.5
        while not stop.is_set():
            try:
                listed = self.core.list_namespaced_endpoints(namespace, _request_timeout=15)
                found = {o.metadata.name: ready_backends(o) for o in listed.items}
                deliver({name: found.get(name, ()) for name in names})
                version = listed.metadata.resource_version
                while not stop.is_set():
                    w: Any = watch_cls()
                    for event in w.stream(
                        self.core.list_namespaced_endpoints,
                        namespace,
                        resource_version=version,
                        timeout_seconds=_WATCH_SECONDS,
                        _request_timeout=_WATCH_SECONDS + 10,
                    ):
                        if stop.is_set():
                            w.stop()
                            break
                        obj = event["object"]
                        version = obj.metadata.resource_version
                        if obj.metadata.name not in names:
                            continue
                        gone = event["type"] == "DELETED"
                        deliver({obj.metadata.name: () if gone else ready_backends(obj)})
                delay = 0.5
            except ApiException as exc:
                if exc.status in (401, 403):
                    deliver(map_api_error(exc, f"endpoints of namespace '{namespace}'"))
                    return
                # 410 Gone (the version expired) and the like: list again.
                log.debug("endpoints watch %s: %s", namespace, exc.reason)
            except Exception as exc:  # network trouble: retry with backoff
                log.debug("endpoints watch %s: %s", namespace, exc)
                stop.wait(delay)
                delay = min(delay * 2, 10.0)


def load_api_client(context: str | None = None, kubeconfig: str | None = None) -> Any:
    """Blocking: a ``kubernetes.client.ApiClient`` for ``context`` (the kubeconfig's current
    one when empty); ClusterError (one line) when the kubeconfig cannot be used."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    load: Any = config.load_kube_config  # untyped
    try:
        load(config_file=kubeconfig, context=context or None, client_configuration=cfg)
    except (ConfigException, OSError) as exc:
        raise ClusterError(f"cannot use the kubeconfig: {exc}") from exc
    return client.ApiClient(cfg)
