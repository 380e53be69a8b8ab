"""The agent's objects in a namespace, as the session sees them: deploy the agent and wait for
its pod, register a session key, point a Service at the agent, restore it, and tear it all
down (``cockpit down``). Blocking calls (the engine runs them in a thread).

Every write is preceded by what makes it safe: an access review before anything is created,
a resourceVersion test on the Service patch, an annotation test on the restore, a uid
precondition on the shadow's deletion. A failed deploy removes what it created.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from cockpit.core import agent_spec
from cockpit.core.agent_spec import (
    AGENT_RULES,
    CLIENT_KEY_PREFIX,
    HOST_KEY_PREFIX,
    USER_RULES,
    AgentSettings,
    rules_allow,
)
from cockpit.core.intercept import (
    AGENT_NAME,
    AGENT_POD_LABELS,
    AGENT_PORT_FIRST,
    AGENT_PORT_LAST,
    ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SHADOW_LABEL,
    InterceptRecord,
    check_interceptable,
    intercept_patch,
    intercept_record,
    is_shadow_of,
    record_of,
    restore_patch,
    service_ports,
    shadow_name,
    shadow_service,
)
from cockpit.errors import (
    AccessDeniedError,
    ClusterError,
    CockpitError,
    InterceptError,
    NotFoundError,
)

# Waiting reasons that will not fix themselves: report at once instead of timing out.
FATAL_WAITING = frozenset(
    {
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
POLL = 0.05


class KubeJson(Protocol):
    """Raw JSON requests with errors mapped to cockpit's (``cockpit.adapters.kube.Kube``)."""

    def json(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str | None = None,
        what: str = "",
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class AgentPod:
    """A ready agent pod and the host key it published."""

    name: str
    host_key: str


@dataclass(slots=True)
class Teardown:
    """What ``cockpit down`` did, for its report."""

    restored: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def summary(self, namespace: str) -> str:
        if not self.restored and not self.deleted:
            return f"nothing of cockpit's in namespace '{namespace}'"
        parts = []
        if self.restored:
            parts.append(f"restored service(s) {', '.join(self.restored)}")
        if self.deleted:
            parts.append(f"deleted {', '.join(self.deleted)}")
        return f"namespace '{namespace}': " + "; ".join(parts)


def _is_conflict(exc: CockpitError) -> bool:
    return "already exists" in exc.message


def _is_test_failure(exc: CockpitError) -> bool:
    # A JSON patch whose `test` op failed (the object changed since we read it) is answered
    # 422 with the generic "Invalid" message.
    return "rejected our request due to an error in our request" in exc.message


@dataclass(frozen=True, slots=True)
class Permission:
    """One verb on one resource, with what cockpit needs it for."""

    verb: str
    resource: str
    group: str = ""
    name: str = ""
    why: str = ""

    def describe(self) -> str:
        group = f" ({self.group})" if self.group else ""
        named = f" named {self.name}" if self.name else ""
        return f"{self.verb} {self.resource}{group}{named}"

    def review(self, namespace: str) -> dict[str, Any]:
        """A SelfSubjectAccessReview asking for it."""
        resource, _, sub = self.resource.partition("/")
        attrs = {"namespace": namespace, "verb": self.verb, "group": self.group,
                 "resource": resource}  # fmt: skip
        if sub:
            attrs["subresource"] = sub
        if self.name:
            attrs["name"] = self.name
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }


def permissions_needed() -> list[Permission]:
    """Everything an intercept needs, including what the agent's Role grants (RBAC lets a
    user create a Role only with permissions the user holds)."""
    perms: list[Permission] = []
    for rule in (*USER_RULES, *AGENT_RULES):
        for resource in rule.resources:
            for verb in rule.verbs:
                for name in rule.names or ("",):
                    perms.append(Permission(verb, resource, rule.api_group, name, rule.why))
    return list(dict.fromkeys(perms))


class AgentCluster:
    """One namespace's agent and intercepted Services."""

    def __init__(
        self,
        kube: KubeJson,
        namespace: str,
        settings: AgentSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kube = kube
        self.ns = namespace
        self.settings = settings or AgentSettings()
        self._sleep = sleep
        q = quote(namespace)
        self._core = f"/api/v1/namespaces/{q}"
        self._apps = f"/apis/apps/v1/namespaces/{q}"
        self._rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{q}"

    # ------------------------------------------------------------------ preflight

    def check_access(self) -> None:
        """AccessDeniedError naming the first missing permission; nothing is written.

        One SelfSubjectRulesReview answers for the namespace; an authorizer that cannot list
        rules (``incomplete``) gets one SelfSubjectAccessReview per permission it did not
        grant."""
        perms = permissions_needed()
        review = self.kube.json(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            body={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                  "spec": {"namespace": self.ns}},
            content_type="application/json", what="review access",
        )  # fmt: skip
        status = review.get("status") or {}
        rules = status.get("resourceRules") or []
        missing = [p for p in perms if not rules_allow(rules, p.verb, p.group, p.resource, p.name)]
        if missing and status.get("incomplete"):

            def allowed(perm: Permission) -> bool:
                data = self.kube.json(
                    "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                    body=perm.review(self.ns), content_type="application/json",
                    what="review access",
                )  # fmt: skip
                return bool((data.get("status") or {}).get("allowed"))

            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="access-review") as pool:
                verdicts = list(pool.map(allowed, missing))
            missing = [p for p, ok in zip(missing, verdicts, strict=True) if not ok]
        if missing:
            perm = missing[0]
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise AccessDeniedError(
                f"intercept needs permission to {perm.describe()} in namespace '{self.ns}'"
                f"{more} (to {perm.why.split(';')[0]})",
                hint="'cockpit doctor' lists every missing permission",
            )

    # --------------------------------------------------------------------- deploy

    def ensure_agent(self, timeout: float = 60.0) -> tuple[AgentPod, bool]:
        """The ready agent pod, deploying the agent first if there is none; (pod, created).
        When the agent this call created cannot start, it is removed again."""
        try:
            self.kube.json("GET", f"{self._apps}/deployments/{AGENT_NAME}", what="get the agent")
        except NotFoundError:
            pass
        else:
            return self.wait_for_agent(timeout), False
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="agent-objects") as pool:
            rest = self._create_agent(pool)

            def check() -> None:  # a failure creating the rest ends the wait at once
                if rest.done() and rest.exception() is not None:
                    rest.result()

            try:
                pod = self.wait_for_agent(timeout, check=check)
                rest.result()
            except CockpitError:
                with contextlib.suppress(CockpitError):
                    rest.result()
                self.delete_agent()
                raise
        return pod, True

    def _create_agent(self, pool: ThreadPoolExecutor) -> Future[None]:
        """Create the ServiceAccount and the Deployment (the pod starts), then, while it
        starts, the Role, RoleBinding and ConfigMap (the agent retries until they exist),
        all owned by the Deployment; the future of that second part."""

        def create(path: str, body: dict[str, Any], what: str) -> dict[str, Any] | None:
            try:
                out: dict[str, Any] = self.kube.json(
                    "POST", path, body=body, content_type="application/json", what=what
                )
            except ClusterError as exc:
                if _is_conflict(exc):  # another session deploys at the same time
                    return None
                raise
            return out

        # The ServiceAccount first: a pod cannot be created before it exists.
        sa = create(f"{self._core}/serviceaccounts", agent_spec.service_account(self.ns),
                    "create the agent's ServiceAccount")  # fmt: skip
        if sa is not None:
            self._wait_for_token(sa)
        try:
            deployment = agent_spec.deployment(self.ns, self.settings)
            dep = create(f"{self._apps}/deployments", deployment, "deploy the agent")
        except CockpitError:
            if sa is not None:
                self._delete(f"{self._core}/serviceaccounts/{AGENT_NAME}")
            raise
        owner = (
            {"ownerReferences": [agent_spec.owner_reference(dep["metadata"]["uid"])]}
            if dep is not None
            else {}
        )

        def rest() -> None:
            jobs = [
                (f"{self._rbac}/roles", agent_spec.role(self.ns), "create the agent's Role"),
                (f"{self._rbac}/rolebindings", agent_spec.role_binding(self.ns),
                 "create the agent's RoleBinding"),
                (f"{self._core}/configmaps", agent_spec.config_map(self.ns),
                 "create the agent's ConfigMap"),
            ]  # fmt: skip
            for _, body, _ in jobs:
                body["metadata"].update(owner)
            futures = [pool.submit(create, *job) for job in jobs]
            if owner and sa is not None:
                # Owned by the Deployment: when it goes (idle TTL, down), the rest follows.
                self.kube.json(
                    "PATCH", f"{self._core}/serviceaccounts/{AGENT_NAME}",
                    body={"metadata": owner}, content_type="application/merge-patch+json",
                    what="own the agent's ServiceAccount",
                )  # fmt: skip
            for future in futures:
                future.result()

        return pool.submit(rest)

    def _wait_for_token(self, sa: dict[str, Any], timeout: float = 5.0) -> None:
        """On clusters whose token controller puts a token Secret in every ServiceAccount
        (before 1.24), a pod is refused until its ServiceAccount has one, and the ReplicaSet
        retries only a second later: wait for the token (a few ms) instead."""
        default = self.kube.json("GET", f"{self._core}/serviceaccounts/default",
                                 what="get the default ServiceAccount")  # fmt: skip
        if not default.get("secrets"):
            return  # tokens are projected: nothing to wait for
        deadline = time.monotonic() + timeout
        while not sa.get("secrets") and time.monotonic() < deadline:
            self._sleep(POLL / 5)
            sa = self.kube.json("GET", f"{self._core}/serviceaccounts/{AGENT_NAME}",
                                what="get the agent's ServiceAccount")  # fmt: skip

    def agent_pods(self) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in AGENT_POD_LABELS.items())
        data = self.kube.json(
            "GET", f"{self._core}/pods", query=[("labelSelector", selector)],
            what="list the agent's pods",
        )  # fmt: skip
        return list(data.get("items") or [])

    def wait_for_agent(
        self,
        timeout: float = 60.0,
        exclude: Iterable[str] = (),
        check: Callable[[], None] = lambda: None,
    ) -> AgentPod:
        """A ready, not terminating agent pod (not in ``exclude``) and its published host key.
        InterceptError at once when the agent cannot start (bad image, crash loop)."""
        skip = set(exclude)
        deadline = time.monotonic() + timeout
        polls = 0
        while True:
            check()
            # The published host key is the agent's "ready"; the pods are looked at only to
            # confirm its pod is alive, and now and then to catch one that cannot start.
            for pod_name, key in self.host_keys().items():
                if pod_name in skip:
                    continue
                pod = self._pod(pod_name)
                if pod is not None and not pod["metadata"].get("deletionTimestamp"):
                    return AgentPod(pod_name, key)
            if polls % 10 == 0:
                for pod in self.agent_pods():
                    # A terminating pod is a removed agent going away (down, idle TTL), whose
                    # container ended on purpose: not the new one failing to start.
                    meta = pod["metadata"]
                    if meta["name"] not in skip and not meta.get("deletionTimestamp"):
                        self._raise_if_stuck(pod)
                self._raise_if_unschedulable()
            polls += 1
            if time.monotonic() > deadline:
                raise InterceptError(
                    f"the cockpit agent in namespace '{self.ns}' is not ready after "
                    f"{timeout:.0f} s",
                    hint=f"kubectl -n {self.ns} describe deployment {AGENT_NAME}",
                )
            self._sleep(POLL / 2)

    def _pod(self, name: str) -> dict[str, Any] | None:
        try:
            pod: dict[str, Any] = self.kube.json(
                "GET", f"{self._core}/pods/{quote(name)}", what="get the agent pod"
            )
        except NotFoundError:
            return None
        return pod

    def _raise_if_stuck(self, pod: dict[str, Any]) -> None:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            image = status.get("image") or self.settings.image
            state = status.get("state") or {}
            waiting = state.get("waiting") or {}
            ended = state.get("terminated") or (status.get("lastState") or {}).get("terminated")
            if waiting.get("reason") in FATAL_WAITING:
                reason, detail = waiting["reason"], waiting.get("message", "")
            elif ended and (status.get("restartCount", 0) >= 1 or state.get("terminated")):
                # The agent never exits on its own: ending once means it cannot run.
                reason = f"{ended.get('reason') or 'exited'} (exit code {ended.get('exitCode')})"
                detail = ended.get("message", "")
            else:
                continue
            detail = " ".join(str(detail).split())[:200]
            raise InterceptError(
                f"the cockpit agent cannot start: {reason} for image {image}"
                + (f": {detail}" if detail else ""),
                hint="set COCKPIT_AGENT_IMAGE to an image the cluster can run",
            )

    def _raise_if_unschedulable(self) -> None:
        try:
            dep = self.kube.json("GET", f"{self._apps}/deployments/{AGENT_NAME}",
                                 what="get the agent")  # fmt: skip
        except NotFoundError as exc:
            raise InterceptError(
                f"the cockpit agent was deleted from namespace '{self.ns}' while starting"
            ) from exc
        for cond in (dep.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                raise InterceptError(f"the cockpit agent's pod is refused: {cond.get('message')}")

    def host_keys(self) -> dict[str, str]:
        """Agent pod -> the host key it published (none before the agent is ready)."""
        try:
            data = self._config_map().get("data") or {}
        except NotFoundError:
            return {}
        return {
            k[len(HOST_KEY_PREFIX) :]: v
            for k, v in data.items()
            if k.startswith(HOST_KEY_PREFIX) and isinstance(v, str)
        }

    def _config_map(self) -> dict[str, Any]:
        cm: dict[str, Any] = self.kube.json(
            "GET", f"{self._core}/configmaps/{AGENT_NAME}", what="read the agent's ConfigMap"
        )
        return cm

    # ---------------------------------------------------------------- session keys

    def register_key(self, session: str, public_key: str) -> None:
        self._patch_keys({CLIENT_KEY_PREFIX + session: public_key})

    def unregister_key(self, session: str) -> None:
        with contextlib.suppress(NotFoundError):  # the agent is gone: so is the key
            self._patch_keys({CLIENT_KEY_PREFIX + session: None})

    def _patch_keys(self, data: dict[str, str | None]) -> None:
        self.kube.json(
            "PATCH", f"{self._core}/configmaps/{AGENT_NAME}", body={"data": data},
            content_type="application/merge-patch+json", what="register the session's key",
        )  # fmt: skip

    # ------------------------------------------------------------------- services

    def read_service(self, service: str) -> dict[str, Any]:
        """The Service, checked: InterceptError (one line) when cockpit cannot intercept it."""
        try:
            svc: dict[str, Any] = self.kube.json(
                "GET", f"{self._core}/services/{quote(service)}", what=f"get service '{service}'"
            )
        except NotFoundError as exc:
            raise NotFoundError(f"service '{service}' not found in namespace '{self.ns}'") from exc
        check_interceptable(svc)
        return svc

    def prepare_shadow(self, svc: dict[str, Any]) -> bool:
        """Create the shadow of a Service not intercepted yet and wait for its endpoints;
        True when this call created it. Needs no agent: it runs while the agent starts."""
        if record_of(svc) is not None:
            return False
        record = intercept_record(svc, {p.port: 0 for p in service_ports(svc)})
        made = self._create_shadow(svc, record)
        self._wait_for_endpoints(record.shadow, like=svc["metadata"]["name"])
        return made

    def point_at_agent(
        self,
        service: str,
        agent_ports: dict[int, int],
        svc: dict[str, Any] | None = None,
        shadow_ready: bool = False,
    ) -> InterceptRecord:
        """Point ``service`` (as read: ``svc``) at the agent's ``agent_ports``, after making
        sure its shadow is there (``shadow_ready``: ``prepare_shadow`` did it); the record.
        A Service another session already pointed at the agent is left as is."""
        for attempt in range(5):
            if svc is None or attempt > 0:
                svc = self.read_service(service)
            record = record_of(svc)
            if record is not None:
                if record.agent_ports() != agent_ports:
                    raise InterceptError(
                        f"service '{service}' points at agent ports {record.agent_ports()}, "
                        f"the agent listens on {agent_ports}",
                        hint="run 'cockpit down' to reset the namespace",
                    )
                return record
            record = intercept_record(svc, agent_ports)
            made_shadow = False
            if not (shadow_ready and attempt == 0):
                made_shadow = self._create_shadow(svc, record)
                self._wait_for_endpoints(record.shadow, like=service)
            try:
                self.kube.json(
                    "PATCH", f"{self._core}/services/{quote(service)}",
                    body=intercept_patch(svc, record), content_type="application/json-patch+json",
                    what=f"point service '{service}' at the agent",
                )  # fmt: skip
                self._wait_for_agent_endpoints(service, record)
                return record
            except ClusterError as exc:
                if made_shadow:
                    self._delete(f"{self._core}/services/{record.shadow}")
                if not _is_test_failure(exc):
                    raise
                # Changed under us (maybe another session intercepted it): look again.
        raise InterceptError(f"service '{service}' keeps changing; try again")

    def _create_shadow(self, svc: dict[str, Any], record: InterceptRecord) -> bool:
        """True when this call created it (False: a matching one already existed)."""
        body = shadow_service(svc, record)
        try:
            self.kube.json(
                "POST", f"{self._core}/services", body=body, content_type="application/json",
                what=f"create shadow service '{record.shadow}'",
            )  # fmt: skip
            return True
        except ClusterError as exc:
            if not _is_conflict(exc):
                raise
        existing = self.kube.json("GET", f"{self._core}/services/{record.shadow}",
                                  what="get the shadow service")  # fmt: skip
        name = svc["metadata"]["name"]
        if not is_shadow_of(existing, name):
            raise InterceptError(
                f"a service named '{record.shadow}' exists and is not cockpit's: "
                f"cannot intercept '{name}'"
            )
        if (existing.get("spec") or {}).get("selector") != dict(record.selector):
            # Left by a crash with another selector: make it match the Service again.
            self.kube.json(
                "PATCH", f"{self._core}/services/{record.shadow}",
                body=[{"op": "replace", "path": "/spec", "value": {
                    **existing["spec"], **body["spec"]}}],
                content_type="application/json-patch+json", what="update the shadow service",
            )  # fmt: skip
        return False

    def _wait_for_endpoints(self, shadow: str, like: str, timeout: float = 15.0) -> None:
        """Until the shadow has as many ready endpoints as ``like`` has now (so nothing is
        routed to a shadow that cannot answer yet)."""
        want = min(1, self._ready_endpoints(like))
        deadline = time.monotonic() + timeout
        while self._ready_endpoints(shadow) < want:
            if time.monotonic() > deadline:
                raise InterceptError(
                    f"shadow service '{shadow}' has no ready endpoints after {timeout:.0f} s"
                )
            self._sleep(POLL / 2)

    def _wait_for_agent_endpoints(
        self, service: str, record: InterceptRecord, timeout: float = 15.0
    ) -> None:
        """Until the endpoints controller has moved ``service`` to the agent (what is left
        is kube-proxy's own sync, under a second)."""
        want = {p.agent_port for p in record.ports}
        deadline = time.monotonic() + timeout
        while True:
            try:
                ep = self.kube.json("GET", f"{self._core}/endpoints/{quote(service)}",
                                    what=f"get endpoints of '{service}'")  # fmt: skip
            except NotFoundError:
                ep = {}
            subsets = ep.get("subsets") or []
            ports = {p.get("port") for s in subsets for p in s.get("ports") or []}
            if subsets and ports == want and all(s.get("addresses") for s in subsets):
                return
            if time.monotonic() > deadline:
                return  # kube-proxy follows when the endpoints do; traffic is not lost meanwhile
            self._sleep(POLL / 2)

    def _ready_endpoints(self, service: str) -> int:
        try:
            ep = self.kube.json("GET", f"{self._core}/endpoints/{service}",
                                what=f"get endpoints of '{service}'")  # fmt: skip
        except NotFoundError:
            return 0
        return sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])

    def restore(self, service: str) -> bool:
        """Give ``service`` back its selector and targetPorts; True when it was intercepted.
        Its shadow stays: the agent may still be forwarding late connections through it."""
        for _ in range(5):
            try:
                svc = self.kube.json("GET", f"{self._core}/services/{quote(service)}",
                                     what=f"get service '{service}'")  # fmt: skip
            except NotFoundError:
                return False
            ops = restore_patch(svc)
            if ops is None:
                return False
            try:
                self.kube.json(
                    "PATCH", f"{self._core}/services/{quote(service)}", body=ops,
                    content_type="application/json-patch+json", what=f"restore '{service}'",
                )  # fmt: skip
                return True
            except ClusterError as exc:
                if not _is_test_failure(exc):
                    raise
        raise InterceptError(f"service '{service}' keeps changing; run 'cockpit down' again")

    def delete_shadow(self, service: str) -> bool:
        shadow = shadow_name(service)
        try:
            existing = self.kube.json("GET", f"{self._core}/services/{shadow}",
                                      what="get the shadow service")  # fmt: skip
        except NotFoundError:
            return False
        if not is_shadow_of(existing, service):
            return False
        return self._delete(
            f"{self._core}/services/{shadow}",
            {"preconditions": {"uid": existing["metadata"]["uid"]}},
        )

    # -------------------------------------------------------------------- teardown

    def teardown(self, drain: float = 1.0) -> Teardown:
        """``cockpit down``: restore every intercepted Service, then (once the endpoints have
        moved back, plus ``drain`` seconds for kube-proxy) delete every shadow and the agent.
        Safe to run any time, from any machine, more than once."""
        report = Teardown()
        services = self.kube.json("GET", f"{self._core}/services",
                                  what="list services").get("items") or []  # fmt: skip
        for svc in services:
            meta = svc["metadata"]
            if ANNOTATION in (meta.get("annotations") or {}) and self.restore(meta["name"]):
                report.restored.append(meta["name"])
        if report.restored:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                self._selects_agent(name) for name in report.restored
            ):
                self._sleep(POLL)
            self._sleep(drain)
        for svc in services:  # every shadow, also those whose Service went away meanwhile
            labels = svc["metadata"].get("labels") or {}
            name = svc["metadata"]["name"]
            ours = SHADOW_LABEL in labels and labels.get(MANAGED_BY_LABEL) == MANAGED_BY
            if ours and self._delete(f"{self._core}/services/{name}"):
                report.deleted.append(f"service/{name}")
        report.deleted += self.delete_agent()
        return report

    def _selects_agent(self, service: str) -> bool:
        """Do ``service``'s endpoints still name an agent port?"""
        try:
            ep = self.kube.json("GET", f"{self._core}/endpoints/{quote(service)}",
                                what=f"get endpoints of '{service}'")  # fmt: skip
        except NotFoundError:
            return False
        ports = {p.get("port") for s in ep.get("subsets") or [] for p in s.get("ports") or []}
        return any(AGENT_PORT_FIRST <= (p or 0) <= AGENT_PORT_LAST for p in ports)

    def delete_agent(self) -> list[str]:
        deleted = []
        # The Deployment last: its garbage collector would race us for the others.
        for path, kind in (
            (f"{self._rbac}/rolebindings", "rolebinding"),
            (f"{self._rbac}/roles", "role"),
            (f"{self._core}/serviceaccounts", "serviceaccount"),
            (f"{self._core}/configmaps", "configmap"),
            (f"{self._apps}/deployments", "deployment"),
        ):
            if self._delete(f"{path}/{AGENT_NAME}", {"propagationPolicy": "Background"}):
                deleted.append(f"{kind}/{AGENT_NAME}")
        return deleted

    def _delete(self, path: str, body: dict[str, Any] | None = None) -> bool:
        try:
            self.kube.json(
                "DELETE", path, body=body, content_type="application/json" if body else None,
                what=f"delete {path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]}",
            )  # fmt: skip
            return True
        except NotFoundError:
            return False
        except ClusterError as exc:
            if "precondition" in exc.message.lower():
                return False  # replaced by another one meanwhile: not ours to delete
            raise


class ApiJson:
    """KubeJson over the official client's ApiClient: raw JSON in and out, errors mapped.
    (``cockpit.adapters.kube.Kube.json`` is the same call.)"""

    def __init__(self, api: Any) -> None:
        self.api = api  # kubernetes.client.ApiClient
        self.server = str(api.configuration.host)

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> ApiJson:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        load: Any = config.load_kube_config
        try:
            load(config_file=path, context=context, client_configuration=cfg)
        except (ConfigException, OSError) as exc:
            raise ClusterError(f"cannot load kubeconfig: {exc}") from exc
        return cls(client.ApiClient(cfg))

    def json(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str | None = None,
        what: str = "",
    ) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            _, url, header_params, payload, _ = self.api.param_serialize(
                method, path, query_params=list(query), header_params=headers, body=body,
                auth_settings=["BearerToken"],
            )  # fmt: skip
            resp = self.api.call_api(method, url, header_params, payload, _request_timeout=(5, 30))
            data = resp.read()
        except ApiException as exc:
            raise _api_error(exc.status or 0, exc.body, what or f"{method} {path}") from exc
        except (HTTPError, OSError) as exc:
            raise ClusterError(f"cannot reach the Kubernetes API at {self.server}: {exc}") from exc
        if not 200 <= resp.status < 300:
            raise _api_error(resp.status, data, what or f"{method} {path}")
        return json.loads(data) if data else None


def _api_error(status: int, body: Any, what: str) -> CockpitError:
    try:
        message = str(json.loads(body).get("message") or "")
    except (ValueError, TypeError, AttributeError):
        message = ""
    if status in (401, 403):
        return AccessDeniedError(message or f"not allowed to {what}")
    if status == 404:
        return NotFoundError(f"{what}: {message or 'not found'}")
    return ClusterError(f"{what}: {message or f'HTTP {status}'}")
