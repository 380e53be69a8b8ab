"""The in-cluster agent as Kubernetes objects: Deployment, ServiceAccount, least-privilege Role
and RoleBinding, and the ConfigMap that carries its host key and the sessions' client keys.

The one place the agent's permissions are written down: the README prints ``AGENT_RULES`` and
``USER_RULES`` from here, and tests check the Deployment against the restricted Pod Security
Standard (``cockpit.core.pss``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cockpit.core.intercept import AGENT_NAME, AGENT_POD_LABELS, MANAGED_BY, MANAGED_BY_LABEL

DEFAULT_IMAGE = "docker.io/cockpit/agent:dev"
SSH_PORT = 2222
AGENT_UID = 65532
HOST_KEY_PREFIX = "host."
"""ConfigMap key ``host.<pod>``: the OpenSSH public host key the agent pod generated at start."""
CLIENT_KEY_PREFIX = "client."
"""ConfigMap key ``client.<session>``: the session's ephemeral OpenSSH public key."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One RBAC PolicyRule."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()  # resourceNames ("" = any)
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "apiGroups": [self.api_group],
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }
        if self.names:
            rule["resourceNames"] = list(self.names)
        return rule

    def describe(self) -> str:
        group = self.api_group or "core"
        names = f" named {', '.join(self.names)}" if self.names else ""
        return f"{'/'.join(self.resources)} ({group}){names}: {', '.join(self.verbs)} - {self.why}"


AGENT_RULES: tuple[Rule, ...] = (
    Rule(
        "",
        ("services",),
        ("get", "list", "patch"),
        why="find the Services it owns at start; check that a session's outbound channel goes "
        "to a Service of the namespace; restore a Service after its sessions are gone",
    ),
    Rule(
        "",
        ("services",),
        ("delete",),
        why="delete a shadow Service (it checks the cockpit labels before deleting)",
    ),
    Rule(
        "",
        ("configmaps",),
        ("get", "patch"),
        (AGENT_NAME,),
        why="publish its host key; read the sessions' public keys; prune keys of expired sessions",
    ),
    Rule(
        "apps",
        ("deployments",),
        ("get", "delete"),
        (AGENT_NAME,),
        why="delete itself after the idle TTL (its other objects are owned by the Deployment)",
    ),
)
"""What the agent's ServiceAccount may do, and nothing more. Service deletion cannot be limited
by name (shadow names are per service), so the agent checks the labels before deleting."""

USER_RULES: tuple[Rule, ...] = (
    Rule("", ("services",), ("get", "list", "create", "patch", "delete"),
         why="create the shadow Service, point the Service at the agent, restore it"),
    Rule("", ("endpoints",), ("get",), why="wait until the shadow Service has endpoints"),
    Rule("", ("pods",), ("get", "list"), why="find the agent pod"),
    Rule("", ("pods/portforward",), ("create",), why="reach the agent's SSH port"),
    Rule("", ("configmaps",), ("get", "create", "patch", "delete"),
         why="register the session's public key; read the agent's host key"),
    Rule("", ("serviceaccounts",), ("get", "create", "patch", "delete"),
         why="the agent's ServiceAccount"),
    Rule("rbac.authorization.k8s.io", ("roles", "rolebindings"),
         ("get", "create", "patch", "delete"), why="the agent's Role and RoleBinding"),
    Rule("apps", ("deployments",), ("get", "create", "delete"), why="the agent's Deployment"),
)  # fmt: skip
"""What a user of ``cockpit up --intercept`` and ``cockpit down`` needs in the namespace (creating
the agent's Role also requires holding every permission in AGENT_RULES)."""


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Knobs of the agent, passed to it as environment variables."""

    image: str = DEFAULT_IMAGE
    grace: float = 60.0
    """Seconds a disconnected session's Services stay intercepted (routed to the original pods)
    before the agent restores them."""
    idle_ttl: float = 600.0
    """Seconds with no session and no intercepted Service before the agent deletes itself."""
    keepalive: float = 1.0
    """Seconds between SSH keepalives; a peer silent for ``keepalive * (keepalive_count + 1)``
    seconds is dropped (a half-open link)."""
    keepalive_count: int = 3
    drain: float = 3.0
    """Seconds a restored Service's agent port keeps forwarding to the original pods, while
    kube-proxy moves the Service away from the agent."""

    def env(self) -> dict[str, str]:
        return {
            "COCKPIT_AGENT_GRACE": _num(self.grace),
            "COCKPIT_AGENT_IDLE_TTL": _num(self.idle_ttl),
            "COCKPIT_AGENT_KEEPALIVE": _num(self.keepalive),
            "COCKPIT_AGENT_KEEPALIVE_COUNT": str(self.keepalive_count),
            "COCKPIT_AGENT_DRAIN": _num(self.drain),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentSettings:
        """Settings from ``COCKPIT_AGENT_*`` variables (the agent's own, or a user's override)."""
        d = cls()
        return cls(
            image=env.get("COCKPIT_AGENT_IMAGE", d.image),
            grace=float(env.get("COCKPIT_AGENT_GRACE", d.grace)),
            idle_ttl=float(env.get("COCKPIT_AGENT_IDLE_TTL", d.idle_ttl)),
            keepalive=float(env.get("COCKPIT_AGENT_KEEPALIVE", d.keepalive)),
            keepalive_count=int(env.get("COCKPIT_AGENT_KEEPALIVE_COUNT", d.keepalive_count)),
            drain=float(env.get("COCKPIT_AGENT_DRAIN", d.drain)),
        )


def _num(value: float) -> str:
    return f"{value:g}"


def _meta(namespace: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": AGENT_NAME,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/name": AGENT_NAME, MANAGED_BY_LABEL: MANAGED_BY},
        **extra,
    }


def service_account(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(namespace)}


def role(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(namespace),
        "rules": [r.to_json() for r in AGENT_RULES],
    }


def role_binding(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AGENT_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": namespace}],
    }


def config_map(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(namespace), "data": {}}


def pod_spec(settings: AgentSettings) -> dict[str, Any]:
    """The agent's PodSpec: admitted by the restricted Pod Security Standard."""
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(settings.env().items())]
    env += [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # glibc serves the agent's packet-sized buffers (256 KiB and up) from fresh mmaps
        # by default: ~400 page faults per MB relayed, 1.4 ms of kernel time per MB. From the
        # heap, kept (up to 32 MiB free) instead of trimmed, they fault ~20 times per MB.
        {"name": "MALLOC_MMAP_THRESHOLD_", "value": "4194304"},
        {"name": "MALLOC_TRIM_THRESHOLD_", "value": "33554432"},
    ]
    return {
        "serviceAccountName": AGENT_NAME,
        "automountServiceAccountToken": True,
        # The agent drains itself on SIGTERM (routes to the original pods) within this time.
        "terminationGracePeriodSeconds": 10,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "agent",
                "image": settings.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-m", "cockpit.agent"],
                "env": env,
                "ports": [{"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"}],
                # No readiness probe on purpose: sessions wait for the host key the agent
                # publishes once it listens, and a probe's period (>= 1 s) would add up to
                # that much to every agent start and every agent restart.
                "resources": {
                    "requests": {"cpu": "50m", "memory": "48Mi"},
                    "limits": {"memory": "256Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}],
    }


def deployment(namespace: str, settings: AgentSettings) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(namespace),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(AGENT_POD_LABELS)},
            "template": {
                "metadata": {"labels": dict(AGENT_POD_LABELS)},
                "spec": pod_spec(settings),
            },
        },
    }


def owner_reference(deployment_uid: str) -> dict[str, Any]:
    """Makes the agent's other objects garbage when its Deployment goes (idle TTL, down)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": AGENT_NAME,
        "uid": deployment_uid,
        "blockOwnerDeletion": False,
    }


def rbac_table() -> str:
    """The permissions as the README shows them."""
    lines = ["The agent's ServiceAccount (Role `cockpit-agent`):", ""]
    lines += [f"- {r.describe()}" for r in AGENT_RULES]
    lines += ["", "A user of `cockpit up --intercept` / `cockpit down`, in the namespace:", ""]
    lines += [f"- {r.describe()}" for r in USER_RULES]
    return "\n".join(lines)


def rules_allow(
    rules: list[dict[str, Any]], verb: str, group: str, resource: str, name: str = ""
) -> bool:
    """Does one of ``rules`` (PolicyRules as JSON, e.g. a SelfSubjectRulesReview's
    ``resourceRules``) grant ``verb`` on ``group``/``resource`` (named ``name``)?"""

    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    for rule in rules:
        if not (has(rule.get("verbs") or [], verb) and has(rule.get("apiGroups") or [], group)):
            continue
        resources = rule.get("resources") or []
        base = resource.split("/")[0]
        if not (has(resources, resource) or ("/" in resource and f"{base}/*" in resources)):
            continue
        names = rule.get("resourceNames") or []
        if not names or (name and name in names):
            return True
    return False
