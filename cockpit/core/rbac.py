"""Every Kubernetes permission cockpit needs in a namespace, in one list, and how to grant them.

``cockpit doctor`` checks each ``Permission`` with a SelfSubjectAccessReview and prints the
RBAC rule for the missing ones; the README's RBAC section is generated from the same list
(``role_rules_yaml``). The intercept's own needs come from ``cockpit.core.agent_spec``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cockpit.core.agent_spec import AGENT_RULES, USER_RULES

VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete")


@dataclass(frozen=True, slots=True)
class Permission:
    """One verb on one resource (``pods/log`` is resource ``pods``, subresource ``log``)."""

    verb: str
    resource: str
    group: str = ""
    name: str = ""  # a resourceName, "" for any
    feature: str = ""  # what cockpit does with it, shown next to a missing one

    @property
    def base_resource(self) -> str:
        return self.resource.partition("/")[0]

    @property
    def subresource(self) -> str:
        return self.resource.partition("/")[2]

    def describe(self) -> str:
        group = f" ({self.group})" if self.group else ""
        named = f" named {self.name}" if self.name else ""
        return f"{self.verb} {self.resource}{group}{named}"

    def review_attributes(self, namespace: str) -> dict[str, str]:
        """The ``resourceAttributes`` of a SelfSubjectAccessReview for it."""
        attrs = {
            "namespace": namespace,
            "verb": self.verb,
            "group": self.group,
            "resource": self.base_resource,
        }
        if self.subresource:
            attrs["subresource"] = self.subresource
        if self.name:
            attrs["name"] = self.name
        return attrs


def _each(
    feature: str, group: str, resources: Iterable[str], verbs: Iterable[str]
) -> list[Permission]:
    return [Permission(v, r, group, feature=feature) for r in resources for v in verbs]


def _from_rules(feature: str, rules: Iterable[object]) -> list[Permission]:
    out = []
    for rule in rules:
        names = getattr(rule, "names", ()) or ("",)
        for resource in getattr(rule, "resources", ()):
            for verb in getattr(rule, "verbs", ()):
                for name in names:
                    out.append(
                        Permission(verb, resource, getattr(rule, "api_group", ""), name, feature)
                    )
    return out


def _dedupe(perms: Iterable[Permission]) -> tuple[Permission, ...]:
    seen: dict[tuple[str, str, str, str], Permission] = {}
    for perm in perms:
        seen.setdefault((perm.group, perm.resource, perm.name, perm.verb), perm)
    return tuple(seen.values())


WATCH = ("get", "list", "watch")

NEEDED: tuple[Permission, ...] = _dedupe(
    [
        *_each(
            "live view of the namespace", "", ("pods", "services", "endpoints", "events"), WATCH
        ),
        *_each("live view of the namespace", "apps", ("deployments",), WATCH),
        *_each("environment of the remote Deployment", "", ("configmaps", "secrets"), WATCH),
        Permission("get", "pods/log", feature="pod logs"),
        Permission("create", "pods/exec", feature="shell and file sync into pods"),
        Permission("create", "pods/portforward", feature="port-forwards and the agent tunnel"),
        Permission("patch", "deployments", "apps", feature="restart a remote service"),
        Permission("delete", "pods", feature="restart a single pod"),
        *_each("intercept a service", "", ("services",), ("create", "patch", "delete")),
        *_each("install the agent", "", ("serviceaccounts",), ("create",)),
        *_each(
            "install the agent", "rbac.authorization.k8s.io", ("roles", "rolebindings"), ("create",)
        ),
        Permission("create", "deployments", "apps", feature="install the agent"),
        *_from_rules("intercept and the agent", USER_RULES),
        # RBAC lets a user create a Role only with permissions the user holds.
        *_from_rules("grant the agent its Role", AGENT_RULES),
    ]
)
"""What cockpit needs in the session's namespace, each with the feature that needs it."""


def _verb_key(verb: str) -> tuple[int, str]:
    return (VERB_ORDER.index(verb) if verb in VERB_ORDER else len(VERB_ORDER), verb)


@dataclass(frozen=True, slots=True)
class RoleRule:
    """A PolicyRule for one resource (and optional resourceName)."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    name: str = ""

    def yaml(self) -> str:
        """As a list item of a Role's ``rules``::

        - apiGroups: [""]
          resources: ["pods/portforward"]
          verbs: ["create"]
        """
        verbs = ", ".join(f'"{v}"' for v in self.verbs)
        lines = [
            f'- apiGroups: ["{self.group}"]',
            f'  resources: ["{self.resource}"]',
        ]
        if self.name:
            lines.append(f'  resourceNames: ["{self.name}"]')
        lines.append(f"  verbs: [{verbs}]")
        return "\n".join(lines)


def rules_for(perms: Iterable[Permission]) -> list[RoleRule]:
    """The fewest rules (one per resource and name) that grant ``perms``, in first-seen order."""
    grouped: dict[tuple[str, str, str], set[str]] = {}
    for perm in perms:
        grouped.setdefault((perm.group, perm.resource, perm.name), set()).add(perm.verb)
    return [
        RoleRule(group, resource, tuple(sorted(verbs, key=_verb_key)), name)
        for (group, resource, name), verbs in grouped.items()
    ]


def role_rules_yaml(perms: Iterable[Permission] = NEEDED) -> str:
    """The ``rules:`` of a Role that grants everything cockpit needs (for the README)."""
    return "\n".join(rule.yaml() for rule in rules_for(perms))


def role_manifest(namespace: str, name: str = "cockpit-user") -> str:
    """A complete Role manifest a cluster admin can apply for cockpit's users."""
    rules = "\n".join("  " + line for line in role_rules_yaml().splitlines())
    return (
        "apiVersion: rbac.authorization.k8s.io/v1\n"
        "kind: Role\n"
        f"metadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"rules:\n{rules}\n"
    )


def rbac_markdown() -> str:
    """The README's table: each permission and the feature that needs it."""
    lines = ["| resource | verbs | needed for |", "|---|---|---|"]
    rows: dict[tuple[str, str, str], tuple[set[str], list[str]]] = {}
    for perm in NEEDED:
        key = (perm.group or "core", perm.resource, perm.name)
        verbs, features = rows.setdefault(key, (set(), []))
        verbs.add(perm.verb)
        if perm.feature not in features:
            features.append(perm.feature)
    for (group, resource, name), (verbs, features) in rows.items():
        named = f" `{name}`" if name else ""
        label = f"`{resource}` ({group}){named}"
        verb_text = ", ".join(sorted(verbs, key=_verb_key))
        lines.append(f"| {label} | {verb_text} | {'; '.join(features)} |")
    return "\n".join(lines)


# -- cockpit doctor --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessCheck:
    permission: Permission
    allowed: bool
    reason: str = ""  # the authorizer's reason or the error that prevented the check


@dataclass(frozen=True, slots=True)
class DoctorReport:
    context: str
    server: str
    namespace: str
    version: str  # "v1.20.2"; "" when the API server could not be reached
    namespace_exists: bool | None  # None: not allowed to tell
    checks: tuple[AccessCheck, ...] = ()
    user: str = ""

    @property
    def missing(self) -> list[Permission]:
        return [c.permission for c in self.checks if not c.allowed]

    @property
    def ok(self) -> bool:
        return bool(self.version) and self.namespace_exists is not False and not self.missing


def render_doctor(report: DoctorReport) -> list[str]:
    """The lines ``cockpit doctor`` prints: what works, then each missing permission with the
    rule that grants it."""
    out = [
        f"ok       API server {report.server} (Kubernetes {report.version}), "
        f"context {report.context}"
    ]
    if report.namespace_exists is False:
        out.append(f"MISSING  namespace {report.namespace} does not exist")
    elif report.namespace_exists is None:
        out.append(f"?        namespace {report.namespace}: not allowed to check that it exists")
    else:
        out.append(f"ok       namespace {report.namespace}")
    missing = [c for c in report.checks if not c.allowed]
    allowed = len(report.checks) - len(missing)
    out.append(f"ok       {allowed} of {len(report.checks)} permissions in {report.namespace}")
    for check in missing:
        perm = check.permission
        out.append(f"MISSING  {perm.describe()} in {report.namespace} - needed for {perm.feature}")
        rule = rules_for([perm])[0]
        out.extend("         " + line for line in rule.yaml().splitlines())
    if missing:
        out.append("")
        out.append(
            f"{len(missing)} permission(s) missing. A Role (and a RoleBinding to "
            f"{report.user or 'your user'}) in {report.namespace} with these rules grants them all:"
        )
        out.extend(rule.yaml() for rule in rules_for(c.permission for c in missing))
    elif report.ok:
        out.append("everything cockpit needs is in place")
    return out


def missing_permissions_line(missing: Sequence[Permission], namespace: str) -> str:
    """One line for an error: ``missing 3 permissions in shop: create pods/portforward, ...``"""
    shown = ", ".join(p.describe() for p in missing[:4])
    more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
    return f"missing {len(missing)} permission(s) in {namespace}: {shown}{more}"
