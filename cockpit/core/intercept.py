"""Intercepts as data: the annotation a Service carries, the patches that point it at the agent
and back, the shadow Service, and the agent's routing table. Pure: no I/O, no asyncio.

Objects are Kubernetes JSON (camelCase dicts), the form both the agent's raw API client and
``ApiClient.sanitize_for_serialization`` produce.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cockpit.errors import InterceptError

ANNOTATION = "cockpit.dev/intercept"
"""On an intercepted Service: its original selector and targetPorts (JSON, see InterceptRecord)."""
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "cockpit"
AGENT_NAME = "cockpit-agent"
"""Name of the agent's Deployment, ServiceAccount, Role, RoleBinding and ConfigMap."""
AGENT_POD_LABELS: Mapping[str, str] = {
    "app.kubernetes.io/name": AGENT_NAME,
    MANAGED_BY_LABEL: MANAGED_BY,
}
"""Labels of the agent pod; an intercepted Service's selector is exactly this."""
SHADOW_SUFFIX = "-cockpit-origin"
SHADOW_LABEL = "cockpit.dev/origin-of"
"""On a shadow Service: the name of the Service whose original pods it selects."""
AGENT_PORT_FIRST = 20000
AGENT_PORT_LAST = 20999
RECORD_VERSION = 1

# Annotation prefixes of other traffic-redirecting tools: a Service carrying one is theirs.
FOREIGN_MARKERS = (
    "telepresence.getambassador.io/",
    "getambassador.io/",
    "mirrord",
    "gefyra.dev/",
    "okteto.com/",
)

DEFAULT_HEADER = "baggage"
DEFAULT_VALUE_TEMPLATE = "cockpit-session={session}"

Mode = Literal["global", "personal"]


def shadow_name(service: str) -> str:
    """``api`` -> ``api-cockpit-origin``; a Service name is a DNS label of at most 63 characters."""
    name = service + SHADOW_SUFFIX
    if len(name) > 63:
        raise InterceptError(
            f"service name '{service}' is too long to intercept: '{name}' would exceed "
            "the 63-character limit of a Service name"
        )
    return name


# ---------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class PortRecord:
    """One port of an intercepted Service: where it pointed before, and the agent's port now."""

    port: int
    protocol: str
    target_port: int | str
    agent_port: int
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "protocol": self.protocol,
            "targetPort": self.target_port,
            "agentPort": self.agent_port,
        }


@dataclass(frozen=True, slots=True)
class InterceptRecord:
    """What the ``cockpit.dev/intercept`` annotation holds: enough to restore the Service."""

    selector: Mapping[str, str]
    ports: tuple[PortRecord, ...]
    shadow: str
    version: int = RECORD_VERSION

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "v": self.version,
                "selector": dict(self.selector),
                "ports": [p.to_json() for p in self.ports],
                "shadow": self.shadow,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_annotation(cls, text: str, service: str = "?") -> InterceptRecord:
        bad = InterceptError(
            f"service '{service}' carries an unreadable {ANNOTATION} annotation",
            hint="restore its selector and targetPorts by hand, then remove the annotation",
        )
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict) or raw.get("v") != RECORD_VERSION:
                raise bad
            selector = raw["selector"]
            if not isinstance(selector, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
            ):
                raise bad
            ports = tuple(
                PortRecord(
                    port=int(p["port"]),
                    protocol=str(p.get("protocol", "TCP")),
                    target_port=_target_port(p["targetPort"]),
                    agent_port=int(p["agentPort"]),
                    name=str(p.get("name", "")),
                )
                for p in raw["ports"]
            )
            return cls(selector=selector, ports=ports, shadow=str(raw["shadow"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise bad from exc

    def agent_ports(self) -> dict[int, int]:
        """Service port -> agent port."""
        return {p.port: p.agent_port for p in self.ports}


def _target_port(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"targetPort {value!r}")
    return value


def record_of(service: Mapping[str, Any]) -> InterceptRecord | None:
    """The Service's intercept record, or None when cockpit has not intercepted it."""
    meta = service.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(ANNOTATION)
    if text is None:
        return None
    return InterceptRecord.from_annotation(text, meta.get("name", "?"))


# ------------------------------------------------------------------------------ validation


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    protocol: str
    target_port: int | str
    name: str = ""


def service_ports(service: Mapping[str, Any]) -> tuple[ServicePort, ...]:
    """The Service's ports; ``targetPort`` defaults to ``port`` as the API server does."""
    out = []
    for p in (service.get("spec") or {}).get("ports") or []:
        target = p.get("targetPort")
        out.append(
            ServicePort(
                port=int(p["port"]),
                protocol=p.get("protocol") or "TCP",
                target_port=p["port"] if target in (None, 0, "") else target,
                name=p.get("name") or "",
            )
        )
    return tuple(out)


def check_interceptable(service: Mapping[str, Any]) -> None:
    """Raise InterceptError (one line) unless cockpit may point this Service at its agent.

    A Service cockpit already intercepts passes: sessions share it through the agent.
    """
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    name = meta.get("name", "?")
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if SHADOW_LABEL in labels or name.endswith(SHADOW_SUFFIX):
        raise InterceptError(
            f"service '{name}' is a cockpit shadow service; intercept the original"
        )
    for key in annotations:
        if any(key.startswith(m) or key.split("/")[0].endswith(m) for m in FOREIGN_MARKERS):
            raise InterceptError(
                f"service '{name}' is already redirected by another tool (annotation '{key}')",
                hint="remove that tool's intercept first",
            )
    if spec.get("type") == "ExternalName":
        raise InterceptError(
            f"service '{name}' is an ExternalName service: it has no pods to replace"
        )
    if spec.get("clusterIP") == "None":
        raise InterceptError(
            f"service '{name}' is headless (clusterIP: None): clients reach its pods directly, "
            "so cockpit cannot intercept it"
        )
    if ANNOTATION in annotations:
        record_of(service)  # raises when unreadable
        return
    selector = spec.get("selector") or {}
    if not selector:
        raise InterceptError(
            f"service '{name}' has no selector (its endpoints are managed by hand), "
            "so cockpit cannot redirect it"
        )
    if dict(selector) == dict(AGENT_POD_LABELS):
        raise InterceptError(
            f"service '{name}' already selects the cockpit agent but has no {ANNOTATION} "
            "annotation",
            hint="run 'cockpit down' to clean up",
        )
    ports = service_ports(service)
    if not ports:
        raise InterceptError(f"service '{name}' has no ports to intercept")
    udp = [p for p in ports if p.protocol != "TCP"]
    if udp:
        raise InterceptError(
            f"service '{name}' has a {udp[0].protocol} port ({udp[0].port}); "
            "cockpit intercepts TCP only"
        )
    shadow_name(name)


# --------------------------------------------------------------------------------- patches


def _escape(key: str) -> str:
    """A map key as a JSON Pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def allocate_agent_ports(
    ports: Sequence[ServicePort] | Sequence[int],
    in_use: Iterable[int],
    first: int = AGENT_PORT_FIRST,
    last: int = AGENT_PORT_LAST,
) -> dict[int, int]:
    """Service port -> the lowest free agent port for each, distinct from ``in_use``."""
    taken = set(in_use)
    out: dict[int, int] = {}
    candidate = first
    for p in ports:
        number = p if isinstance(p, int) else p.port
        while candidate in taken:
            candidate += 1
        if candidate > last:
            raise InterceptError(
                f"the agent has no free port left ({first}-{last}); release other intercepts"
            )
        out[number] = candidate
        taken.add(candidate)
    return out


def intercept_record(service: Mapping[str, Any], agent_ports: Mapping[int, int]) -> InterceptRecord:
    """The record of ``service`` as it is now, with each port moved to ``agent_ports[port]``."""
    name = (service.get("metadata") or {})["name"]
    ports = service_ports(service)
    missing = [p.port for p in ports if p.port not in agent_ports]
    if missing:
        raise InterceptError(f"no agent port for port {missing[0]} of service '{name}'")
    return InterceptRecord(
        selector=dict((service.get("spec") or {}).get("selector") or {}),
        ports=tuple(
            PortRecord(p.port, p.protocol, p.target_port, agent_ports[p.port], p.name)
            for p in ports
        ),
        shadow=shadow_name(name),
    )


def intercept_patch(service: Mapping[str, Any], record: InterceptRecord) -> list[dict[str, Any]]:
    """JSON patch pointing ``service`` at the agent, guarded by its resourceVersion so a
    concurrent edit (or another session's intercept) makes it fail instead of clobbering."""
    meta = service.get("metadata") or {}
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
    ]
    if meta.get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    ops.append(
        {
            "op": "add",
            "path": f"/metadata/annotations/{_escape(ANNOTATION)}",
            "value": record.to_annotation(),
        }
    )
    ops.append({"op": "replace", "path": "/spec/selector", "value": dict(AGENT_POD_LABELS)})
    by_port = {(p.port, p.protocol): p for p in record.ports}
    for i, p in enumerate(service_ports(service)):
        ops.append(
            {
                "op": "replace" if _has_target(service, i) else "add",
                "path": f"/spec/ports/{i}/targetPort",
                "value": by_port[p.port, p.protocol].agent_port,
            }
        )
    return ops


def _has_target(service: Mapping[str, Any], index: int) -> bool:
    return "targetPort" in ((service.get("spec") or {}).get("ports") or [])[index]


def restore_patch(service: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """JSON patch giving ``service`` back its original selector and targetPorts and dropping
    the annotation; None when it is not intercepted. The ``test`` on the annotation makes two
    concurrent restores (agent and ``cockpit down``) safe: the second one fails."""
    record = record_of(service)
    if record is None:
        return None
    ops: list[dict[str, Any]] = [
        {
            "op": "test",
            "path": f"/metadata/annotations/{_escape(ANNOTATION)}",
            "value": service["metadata"]["annotations"][ANNOTATION],
        },
        {"op": "remove", "path": f"/metadata/annotations/{_escape(ANNOTATION)}"},
        {"op": "replace", "path": "/spec/selector", "value": dict(record.selector)},
    ]
    by_port = {(p.port, p.protocol): p for p in record.ports}
    for i, p in enumerate(service_ports(service)):
        original = by_port.get((p.port, p.protocol))
        if original is not None:  # a port added while intercepted keeps what it was given
            ops.append(
                {
                    "op": "replace",
                    "path": f"/spec/ports/{i}/targetPort",
                    "value": original.target_port,
                }
            )
    return ops


def shadow_service(service: Mapping[str, Any], record: InterceptRecord) -> dict[str, Any]:
    """The ``S-cockpit-origin`` Service: S's original selector and ports, so the original pods
    stay reachable by name while S points at the agent."""
    meta = service.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": record.shadow,
            "namespace": meta.get("namespace"),
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, SHADOW_LABEL: meta["name"]},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": dict(record.selector),
            "ports": [
                {
                    **({"name": p.name} if p.name else {}),
                    "port": p.port,
                    "protocol": p.protocol,
                    "targetPort": p.target_port,
                }
                for p in record.ports
            ],
        },
    }


def is_shadow_of(shadow: Mapping[str, Any], service: str) -> bool:
    """True when ``shadow`` is the cockpit shadow Service of ``service``."""
    labels = (shadow.get("metadata") or {}).get("labels") or {}
    return labels.get(SHADOW_LABEL) == service and labels.get(MANAGED_BY_LABEL) == MANAGED_BY


# ---------------------------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """A personal intercept's request matcher: header ``name`` carries member ``value``."""

    name: str  # lower case
    value: str

    @classmethod
    def for_session(
        cls, session: str, header: str = DEFAULT_HEADER, template: str = DEFAULT_VALUE_TEMPLATE
    ) -> HeaderMatch:
        return cls(header.lower(), template.format(session=session))

    def matches(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """True when one of the request's ``name`` headers lists ``value`` as a member.

        Values are comma-separated lists (RFC 9110 5.3), and a baggage member may carry
        ``;properties``: ``baggage: user=1, cockpit-session=abc;ttl=5`` matches
        ``cockpit-session=abc``.
        """
        name = self.name.encode()
        want = self.value.encode()
        for key, raw in headers:
            if key.lower() != name:
                continue
            if raw.strip() == want:
                return True
            for member in raw.split(b","):
                if member.split(b";", 1)[0].strip() == want:
                    return True
        return False


@dataclass(frozen=True, slots=True)
class Claim:
    """A session's intercept on one service."""

    session: str
    mode: Mode
    match: HeaderMatch | None = None  # personal only

    def describe(self) -> str:
        if self.match is None:
            return f"a global intercept of session {self.session}"
        return (
            f"a personal intercept of session {self.session} "
            f"({self.match.name}: {self.match.value})"
        )


@dataclass(slots=True)
class RouteTable:
    """Which session receives which traffic of each intercepted service.

    The agent keeps one; every decision it makes per connection or per request is a lookup
    here, so toggling an intercept is a dictionary update.
    """

    claims: dict[str, dict[str, Claim]] = field(default_factory=dict)

    def claim(self, service: str, claim: Claim) -> None:
        """Add or replace ``claim.session``'s claim on ``service``; InterceptError on overlap."""
        if claim.mode == "personal" and claim.match is None:
            raise InterceptError("a personal intercept needs a header to match")
        for other in self.claims.get(service, {}).values():
            if other.session == claim.session:
                continue
            if (
                other.mode == "global"
                or claim.mode == "global"
                or (other.match is not None and other.match == claim.match)
            ):
                raise InterceptError(
                    f"service '{service}' is held by {other.describe()}; "
                    f"{claim.describe()} would overlap it"
                )
        self.claims.setdefault(service, {})[claim.session] = claim

    def release(self, service: str, session: str) -> Claim | None:
        held = self.claims.get(service, {})
        claim = held.pop(session, None)
        if not held:
            self.claims.pop(service, None)
        return claim

    def release_session(self, session: str) -> list[str]:
        """Drop every claim of ``session``; the services it held."""
        services = [s for s, held in self.claims.items() if session in held]
        for service in services:
            self.release(service, session)
        return services

    def global_owner(self, service: str) -> str | None:
        for claim in self.claims.get(service, {}).values():
            if claim.mode == "global":
                return claim.session
        return None

    def personal(self, service: str) -> list[Claim]:
        return [c for c in self.claims.get(service, {}).values() if c.mode == "personal"]

    def route_request(self, service: str, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The session that receives an HTTP request to ``service``; None: the original pods."""
        owner = self.global_owner(service)
        if owner is not None:
            return owner
        headers = list(headers)
        for claim in self.personal(service):
            assert claim.match is not None
            if claim.match.matches(headers):
                return claim.session
        return None

    def snapshot(self) -> dict[str, list[dict[str, str]]]:
        """JSON view for status queries."""
        return {
            service: [
                {
                    "session": c.session,
                    "mode": c.mode,
                    **({"header": c.match.name, "value": c.match.value} if c.match else {}),
                }
                for c in held.values()
            ]
            for service, held in sorted(self.claims.items())
        }


HTTP_METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"TRACE")


def sniff_http1(first: bytes) -> bool | None:
    """Does a connection that starts with ``first`` speak HTTP/1.x? None: too few bytes to tell.

    HTTP/2 prior knowledge (``PRI * HTTP/2.0``) and CONNECT tunnels count as not HTTP/1.x:
    they are routed per connection.
    """
    for method in HTTP_METHODS:
        probe = method + b" "
        n = min(len(first), len(probe))
        if first[:n] == probe[:n]:
            if len(first) < len(probe):
                return None
            return True
    return False


@dataclass(slots=True)
class Leases:
    """Which sessions hold each service the agent owns, and how long the absent ones have been
    gone: the agent's crash-safety clock (times are ``time.monotonic()`` seconds).

    A service with no live holder for ``grace`` seconds is due for restore; an agent with no
    service and no session for ``ttl`` seconds is due to delete itself.
    """

    holders: dict[str, set[str]] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)
    gone_since: dict[str, float] = field(default_factory=dict)  # session -> when it dropped
    orphaned_since: dict[str, float] = field(default_factory=dict)  # service -> no holder since
    idle_since: float | None = None

    def adopt(self, service: str, now: float) -> None:
        """A service found pointing at the agent (agent start) that no session holds yet."""
        if not self.holders.get(service):
            self.holders.setdefault(service, set())
            self.orphaned_since.setdefault(service, now)
        self.idle_since = None

    def connect(self, session: str) -> None:
        self.connected.add(session)
        self.gone_since.pop(session, None)
        self.idle_since = None

    def disconnect(self, session: str, now: float) -> None:
        self.connected.discard(session)
        if any(session in h for h in self.holders.values()):
            self.gone_since[session] = now
        self._maybe_idle(now)

    def hold(self, service: str, session: str) -> None:
        self.holders.setdefault(service, set()).add(session)
        self.orphaned_since.pop(service, None)
        self.idle_since = None

    def drop(self, service: str, session: str, now: float) -> bool:
        """``session`` lets go of ``service``; True when nobody holds it any more."""
        held = self.holders.get(service)
        if held is None:
            return False
        held.discard(session)
        if not any(session in h for h in self.holders.values()):
            self.gone_since.pop(session, None)
        if held:
            return False
        # Restored at once by the caller; should that fail, the grace clock retries it.
        self.orphaned_since.setdefault(service, now)
        return True

    def forget(self, service: str, now: float) -> None:
        """``service`` was restored: it is no longer the agent's."""
        self.holders.pop(service, None)
        self.orphaned_since.pop(service, None)
        self._maybe_idle(now)

    def expire(self, now: float, grace: float) -> tuple[list[str], list[str]]:
        """Sessions gone for ``grace`` seconds (dropped from every service they held), and the
        services left with no holder for ``grace`` seconds: (sessions, services to restore)."""
        sessions = sorted(s for s, t in self.gone_since.items() if now - t >= grace)
        for session in sessions:
            del self.gone_since[session]
            for service, held in self.holders.items():
                if session in held:
                    held.discard(session)
                    if not held:
                        self.orphaned_since.setdefault(service, now - grace)
        due = sorted(
            s
            for s, t in self.orphaned_since.items()
            if now - t >= grace and not self.holders.get(s)
        )
        return sessions, due

    def live_holders(self, service: str) -> set[str]:
        return self.holders.get(service, set()) & self.connected

    def _maybe_idle(self, now: float) -> None:
        if not self.connected and not self.holders and self.idle_since is None:
            self.idle_since = now

    def idle_for(self, now: float) -> float:
        """Seconds with no session and no service (0 while anything is live)."""
        self._maybe_idle(now)
        return 0.0 if self.idle_since is None else now - self.idle_since
