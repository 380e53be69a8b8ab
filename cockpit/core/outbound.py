"""Which outbound destinations the agent connects a session to: the Services of its own
namespace, by name or ClusterIP, on one of their ports. Pure: decided before any connect.

The agent must not be an open proxy into (or out of) the cluster, so everything that is not a
Service port of the namespace is refused with a reason, without a DNS lookup or a connect.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """What the check needs of one Service."""

    name: str
    cluster_ip: str  # "" for a headless Service
    ports: frozenset[int]
    external: bool = False  # type ExternalName: a name outside the cluster


def service_entry(service: Mapping[str, Any]) -> ServiceEntry:
    """A Service's JSON (camelCase) as a ServiceEntry."""
    spec = service.get("spec") or {}
    ip = str(spec.get("clusterIP") or "")
    return ServiceEntry(
        name=str((service.get("metadata") or {}).get("name") or ""),
        cluster_ip="" if ip == "None" else ip,
        ports=frozenset(
            int(p["port"])
            for p in spec.get("ports") or []
            if str(p.get("protocol", "TCP")).upper() == "TCP"
        ),
        external=spec.get("type") == "ExternalName",
    )


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the agent connects: ``host`` (a ClusterIP, or the FQDN of a headless Service)."""

    service: str
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.service}:{self.port}"


class Refused(Exception):
    """A destination the agent does not connect to; the message says why, in one line."""


def service_name(host: str, namespace: str, domain: str = DEFAULT_CLUSTER_DOMAIN) -> str | None:
    """The Service a host name names in ``namespace`` (``store``, ``store.NS``, ``store.NS.svc``,
    ``store.NS.svc.DOMAIN``), or None when it names nothing of the namespace."""
    name = host.lower().rstrip(".")
    for suffix in (f".{namespace}.svc.{domain}", f".{namespace}.svc", f".{namespace}", ""):
        if suffix and not name.endswith(suffix):
            continue
        label = name[: len(name) - len(suffix)] if suffix else name
        if label and "." not in label:
            return label
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_destination(
    host: str,
    port: int,
    namespace: str,
    services: Iterable[ServiceEntry],
    domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> Destination:
    """The Service port ``host:port`` names in ``namespace``; Refused (one line) otherwise."""
    known = {s.name: s for s in services}
    scope = f"only the Services of namespace '{namespace}' are reachable through the agent"
    if _is_ip(host):
        entry = next((s for s in known.values() if s.cluster_ip and s.cluster_ip == host), None)
        if entry is None:
            raise Refused(f"{host}:{port} is not the ClusterIP of a Service; {scope}")
    else:
        name = service_name(host, namespace, domain)
        entry = known.get(name) if name is not None else None
        if entry is None:
            what = f"no Service '{name}'" if name is not None else f"'{host}' names no Service"
            raise Refused(f"{host}:{port}: {what} in namespace '{namespace}'; {scope}")
    if entry.external:
        raise Refused(f"{host}:{port}: Service '{entry.name}' is an ExternalName; {scope}")
    if port not in entry.ports:
        have = ", ".join(str(p) for p in sorted(entry.ports)) or "none"
        raise Refused(f"{host}:{port}: Service '{entry.name}' has no TCP port {port} ({have})")
    target = entry.cluster_ip or f"{entry.name}.{namespace}.svc.{domain}"
    return Destination(entry.name, target, port)
