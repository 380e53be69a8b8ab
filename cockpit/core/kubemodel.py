"""The namespace as cockpit sees it: Kubernetes objects (plain JSON dicts from list/watch) folded
into one view per Service — which pods it selects, how many are ready, restarts, and why not.

Pure: no I/O. The watch loops feed ``NamespaceModel``; the engine diffs ``ServiceView``s into
``ServiceChanged``/``ServiceRemoved`` and turns Warning events into log lines.
"""

from __future__ import annotations

import calendar
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cockpit.core.events import (
    Event,
    Level,
    LogLine,
    ServiceChanged,
    ServiceRemoved,
    SourceKind,
)
from cockpit.core.intercept import SHADOW_LABEL

Obj = Mapping[str, Any]

KINDS = ("services", "deployments", "pods", "endpoints", "events")
"""What the live model watches, in the order the initial lists are folded."""

EVENTS_SOURCE = "events"

# Waiting reasons that say "starting normally", not "something is wrong".
_STARTING = frozenset({"ContainerCreating", "PodInitializing"})
# How long a liveness/startup probe failure keeps being shown after the event last fired.
PROBE_FAILURE_WINDOW = 60.0
# Reasons sorted most actionable first when a service has several.
_SEVERITY = {
    "OOMKilled": 0,
    "CrashLoopBackOff": 1,
    "ImagePullBackOff": 2,
    "ErrImagePull": 2,
    "CreateContainerConfigError": 3,
    "CreateContainerError": 3,
    "InvalidImageName": 3,
    "Unschedulable": 4,
    "Evicted": 4,
    "LivenessProbeFailed": 5,
    "StartupProbeFailed": 5,
    "ReadinessProbeFailed": 6,
    "Error": 7,
    "ProgressDeadlineExceeded": 8,
    "FailedCreate": 8,
    "NotReady": 9,
    "ContainerCreating": 10,
    "PodInitializing": 10,
    "Pending": 11,
    "NoPods": 12,
    "ScaledToZero": 12,
    "NoSelector": 12,
}


def parse_time(value: str | None) -> float | None:
    """RFC 3339 (``2024-05-01T10:00:00Z``, fractions and offsets allowed) -> unix time."""
    if not value or len(value) < 19:
        return None
    try:
        base = calendar.timegm(
            (
                int(value[0:4]),
                int(value[5:7]),
                int(value[8:10]),
                int(value[11:13]),
                int(value[14:16]),
                int(value[17:19]),
                0,
                0,
                0,
            )
        )
    except ValueError:
        return None
    rest = value[19:]
    frac = 0.0
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        frac = float("0" + rest[:end]) if end > 1 else 0.0
        rest = rest[end:]
    if rest and rest not in ("Z", "z"):
        sign = -1 if rest[0] == "-" else 1
        try:
            hours, minutes = int(rest[1:3]), int(rest[-2:])
        except ValueError:
            return None
        base -= sign * (hours * 3600 + minutes * 60)
    return base + frac


def name_of(obj: Obj) -> str:
    name: str = obj.get("metadata", {}).get("name", "")
    return name


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether a Service selector picks an object with ``labels``. An empty selector picks
    nothing (a Service without selector has its endpoints managed by hand)."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())


# -- containers and pods ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerView:
    """One container of a pod as its status reports it."""

    name: str
    ready: bool = False
    restarts: int = 0
    state: str = "unknown"  # "running" | "waiting" | "terminated" | "unknown"
    reason: str = ""  # waiting or terminated reason
    exit_code: int | None = None  # of the current instance, when terminated
    container_id: str = ""  # the current instance ("" before the first start)
    started_at: float | None = None
    last_container_id: str = ""  # the instance before the current one
    last_reason: str = ""  # why that one ended: "OOMKilled", "Error", "Completed"
    last_exit_code: int | None = None
    init: bool = False

    @property
    def log_instance(self) -> str:
        """The instance whose output the (non-previous) log endpoint serves; "" when none.

        The kubelet's rule: a running container's current instance; a terminated one's own
        instance or, if it has none, the last; a waiting one's last terminated instance.
        """
        if self.state == "running":
            return self.container_id
        if self.state == "terminated":
            return self.container_id or self.last_container_id
        return self.last_container_id

    @property
    def has_output(self) -> bool:
        """Whether the log endpoint can serve anything for it now."""
        return bool(self.log_instance)


def container_view(status: Obj, *, init: bool = False) -> ContainerView:
    state_obj = status.get("state") or {}
    state, detail = "unknown", {}
    for key in ("running", "waiting", "terminated"):
        if key in state_obj and state_obj[key] is not None:
            state, detail = key, state_obj[key]
            break
    last = (status.get("lastState") or {}).get("terminated") or {}
    return ContainerView(
        name=status.get("name", ""),
        ready=bool(status.get("ready")),
        restarts=int(status.get("restartCount") or 0),
        state=state,
        reason=detail.get("reason", "") if state != "running" else "",
        exit_code=detail.get("exitCode") if state == "terminated" else None,
        container_id=status.get("containerID") or detail.get("containerID") or "",
        started_at=parse_time(detail.get("startedAt")),
        last_container_id=last.get("containerID", "") or "",
        last_reason=last.get("reason", "") or "",
        last_exit_code=last.get("exitCode"),
        init=init,
    )


@dataclass(frozen=True, slots=True)
class PodView:
    """A pod reduced to what the services pane and the log follower need."""

    name: str
    phase: str
    ready: bool
    deleting: bool
    restarts: int
    reasons: tuple[str, ...]
    containers: tuple[ContainerView, ...] = ()
    init_containers: tuple[ContainerView, ...] = ()
    uid: str = ""
    created: float | None = None
    spec_containers: tuple[str, ...] = ()  # names from the spec, in order

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def container(self, name: str) -> ContainerView | None:
        for view in self.containers:
            if view.name == name:
                return view
        return None


@dataclass(frozen=True, slots=True)
class ProbeFailure:
    """A probe failure reported by an Unhealthy event on a pod."""

    probe: str  # "Readiness" | "Liveness" | "Startup"
    container: str  # "" when the event does not say
    last_seen: float


def probe_failures(events: Iterable[Obj]) -> list[ProbeFailure]:
    """The probe failures among a pod's events (reason Unhealthy, "<Kind> probe failed: ...")."""
    found = []
    for event in events:
        if event.get("reason") != "Unhealthy":
            continue
        message = event.get("message") or ""
        probe = message.split(" ", 1)[0]
        if probe not in ("Readiness", "Liveness", "Startup") or "probe failed" not in message:
            continue
        path = (event.get("involvedObject") or {}).get("fieldPath") or ""
        container = path[path.find("{") + 1 : -1] if path.endswith("}") and "{" in path else ""
        when = event_time(event)
        found.append(ProbeFailure(probe, container, when if when is not None else 0.0))
    return found


def pod_view(pod: Obj, events: Iterable[Obj] = (), *, now: float | None = None) -> PodView:
    """Fold a pod (and the Warning events about it) into a PodView with its reasons."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    containers = tuple(container_view(s) for s in status.get("containerStatuses") or ())
    inits = tuple(container_view(s, init=True) for s in status.get("initContainerStatuses") or ())
    conditions = {c.get("type"): c for c in status.get("conditions") or ()}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    deleting = bool(meta.get("deletionTimestamp"))
    spec_names = tuple(c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or ())
    reasons: list[str] = []

    def add(reason: str) -> None:
        if reason and reason not in reasons:
            reasons.append(reason)

    if phase == "Failed":
        add(status.get("reason") or "Failed")
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        add(scheduled.get("reason") or "Unschedulable")
    for init in inits:
        if init.state == "waiting" and init.reason not in _STARTING:
            add(f"Init:{init.reason}" if init.reason else "")
        elif init.state == "terminated" and init.exit_code:
            add(f"Init:{init.reason or 'Error'}")
    failures = probe_failures(events)
    for view in containers:
        if view.state == "waiting":
            add(view.reason)
        elif view.state == "terminated" and (view.exit_code or phase != "Succeeded"):
            add(view.reason or "Error")
        if view.last_reason == "OOMKilled":
            add("OOMKilled")
        if view.state != "running":
            continue
        for failure in failures:
            if failure.container and failure.container != view.name:
                continue
            # Only failures of the current instance count: an old one was fixed by a restart.
            if view.started_at is not None and failure.last_seen < view.started_at:
                continue
            if failure.probe == "Readiness":
                if not view.ready:
                    add("ReadinessProbeFailed")
            elif now is None or now - failure.last_seen <= PROBE_FAILURE_WINDOW:
                add(f"{failure.probe}ProbeFailed")
        if not view.ready and not deleting and "ReadinessProbeFailed" not in reasons:
            add("NotReady")
    if phase == "Pending" and not reasons:
        add("Pending")
    return PodView(
        name=meta.get("name", ""),
        phase=phase,
        ready=ready and not deleting,
        deleting=deleting,
        restarts=sum(c.restarts for c in containers),
        reasons=tuple(reasons),
        containers=containers,
        init_containers=inits,
        uid=meta.get("uid", ""),
        created=parse_time(meta.get("creationTimestamp")),
        spec_containers=spec_names,
    )


# -- services --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceView:
    """One Service as the services pane shows it."""

    name: str
    ready: int = 0
    total: int = 0
    restarts: int = 0
    reasons: tuple[str, ...] = ()
    phase: str = "Unknown"  # "Ready" | "Degraded" | "Unavailable" | "NoPods" | "NoSelector"
    pods: tuple[str, ...] = ()  # selected, not finished, sorted
    endpoints: tuple[str, ...] = ()  # pods behind the Service's ready endpoint addresses
    selector: Mapping[str, str] = field(default_factory=dict)
    deployments: tuple[str, ...] = ()  # Deployments whose pods the Service selects

    def changed(self) -> ServiceChanged:
        return ServiceChanged(
            service=self.name,
            ready=self.ready,
            total=self.total,
            restarts=self.restarts,
            reasons=self.reasons,
        )


def sort_reasons(reasons: Iterable[str]) -> tuple[str, ...]:
    unique = list(dict.fromkeys(r for r in reasons if r))
    return tuple(sorted(unique, key=lambda r: _SEVERITY.get(r.removeprefix("Init:"), 7)))


def deployment_reasons(deployment: Obj) -> list[str]:
    """A Deployment's own failures: a rollout past its deadline, pods it cannot create."""
    found = []
    for cond in (deployment.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            found.append("ProgressDeadlineExceeded")
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            found.append(cond.get("reason") or "ReplicaFailure")
    return found


def desired_replicas(deployment: Obj) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def endpoint_pods(endpoints: Obj | None) -> tuple[str, ...]:
    """Pods behind the ready addresses of an Endpoints object."""
    if not endpoints:
        return ()
    names = set()
    for subset in endpoints.get("subsets") or ():
        for address in subset.get("addresses") or ():
            ref = address.get("targetRef") or {}
            names.add(ref.get("name") or address.get("ip", ""))
    return tuple(sorted(names))


def service_view(
    service: Obj,
    pods: Iterable[PodView],
    deployments: Iterable[Obj] = (),
    endpoints: Obj | None = None,
) -> ServiceView:
    """Fold a Service, the pods it selects and the Deployments that make them into a view.

    ``total`` is what should run: the selected pods that are neither finished nor being
    deleted, or the Deployments' desired replicas if that is more (a pod that cannot even be
    created still counts as missing). ``ready`` counts pods whose Ready condition is True.
    """
    name = name_of(service)
    selector = (service.get("spec") or {}).get("selector") or {}
    live = sorted((p for p in pods if not p.finished and not p.deleting), key=lambda p: p.name)
    deploys = list(deployments)
    desired = sum(desired_replicas(d) for d in deploys)
    reasons: list[str] = []
    for pod in live:
        reasons.extend(pod.reasons)
    for deploy in deploys:
        reasons.extend(deployment_reasons(deploy))
    ready = sum(1 for p in live if p.ready)
    total = max(len(live), desired)
    if not selector:
        phase = "NoSelector"
        reasons.append("NoSelector")
    elif total == 0:
        phase = "NoPods"
        reasons.append("ScaledToZero" if deploys else "NoPods")
    elif ready == total:
        phase = "Ready"
    elif ready:
        phase = "Degraded"
    else:
        phase = "Unavailable"
    return ServiceView(
        name=name,
        ready=ready,
        total=total,
        restarts=sum(p.restarts for p in live),
        reasons=sort_reasons(reasons),
        phase=phase,
        pods=tuple(p.name for p in live),
        endpoints=endpoint_pods(endpoints),
        selector=dict(selector),
        deployments=tuple(sorted(name_of(d) for d in deploys)),
    )


def diff_views(old: Mapping[str, ServiceView], new: Mapping[str, ServiceView]) -> list[Event]:
    """The events that take a consumer from ``old`` to ``new`` (changed first, then removed)."""
    out: list[Event] = []
    for name, view in new.items():
        before = old.get(name)
        if before is None or before.changed() != view.changed():
            out.append(view.changed())
    out.extend(ServiceRemoved(name) for name in old if name not in new)
    return out


# -- events ----------------------------------------------------------------------------------


def event_time(event: Obj) -> float | None:
    """When an Event last happened (lastTimestamp, else eventTime or series, else creation)."""
    series = event.get("series") or {}
    for value in (
        event.get("lastTimestamp"),
        series.get("lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        parsed = parse_time(value)
        if parsed is not None:
            return parsed
    return None


def event_count(event: Obj) -> int:
    series = event.get("series") or {}
    return int(series.get("count") or event.get("count") or 1)


def event_text(event: Obj) -> str:
    """``Pod/store-7d9f-x2k4p: BackOff: Back-off restarting failed container (x5)``"""
    ref = event.get("involvedObject") or {}
    target = f"{ref.get('kind', '?')}/{ref.get('name', '?')}"
    message = " ".join((event.get("message") or "").split())
    count = event_count(event)
    suffix = f" (x{count})" if count > 1 else ""
    return f"{target}: {event.get('reason', '')}: {message}{suffix}"


def event_line(event: Obj, service: str, fallback_ts: float) -> LogLine:
    """A Warning event as a line of the log stream (WARNING level, so the alert rules see it)."""
    when = event_time(event)
    level = Level.WARNING if event.get("type") == "Warning" else Level.INFO
    return LogLine(
        source=EVENTS_SOURCE,
        service=service,
        kind=SourceKind.EVENT,
        text=event_text(event),
        ts=when if when is not None else fallback_ts,
        level=level,
    )


class EventOccurrences:
    """Which Event updates are new occurrences: an Event object is updated in place (its count
    grows), and a relist delivers every Event again; each occurrence is reported once."""

    def __init__(self, max_tracked: int = 5_000) -> None:
        self._seen: dict[str, tuple[int, float]] = {}
        self._max = max_tracked

    def is_new(self, event: Obj) -> bool:
        meta = event.get("metadata") or {}
        key = meta.get("uid") or meta.get("name") or ""
        mark = (event_count(event), event_time(event) or 0.0)
        before = self._seen.get(key)
        if before is not None and mark <= before:
            return False
        self._seen.pop(key, None)
        self._seen[key] = mark
        if len(self._seen) > self._max:
            del self._seen[next(iter(self._seen))]
        return True


def replicaset_deployment(name: str) -> str:
    """The Deployment a ReplicaSet name belongs to (``store-7d9f8c6b5`` -> ``store``)."""
    head, sep, _ = name.rpartition("-")
    return head if sep else name


# -- the namespace ---------------------------------------------------------------------------


class NamespaceModel:
    """The objects of one namespace as last listed/watched, and the views folded from them.

    ``services`` limits the views to the session's services (None: every Service).
    """

    def __init__(self, services: Collection[str] | None = None) -> None:
        self.services = frozenset(services) if services is not None else None
        self.objects: dict[str, dict[str, Obj]] = {kind: {} for kind in KINDS}
        # Warning events by the (kind, name) they are about.
        self._events_by_target: dict[tuple[str, str], dict[str, Obj]] = {}
        # Last services of a pod, remembered after the pod is gone (its final events).
        self._pod_services: dict[str, tuple[str, ...]] = {}

    # folding ---------------------------------------------------------------------------------

    def replace(self, kind: str, items: Iterable[Obj]) -> None:
        """A (re)list: the complete set of ``kind`` objects."""
        if kind == "events":
            self._events_by_target.clear()
        self.objects[kind] = {}
        for obj in items:
            self.apply(kind, "ADDED", obj)

    def apply(self, kind: str, change: str, obj: Obj) -> None:
        """One watch event: ``change`` is ADDED, MODIFIED or DELETED."""
        name = name_of(obj)
        store = self.objects[kind]
        if kind == "events":
            if obj.get("type") != "Warning":
                return  # Normal events say nothing the views need
            self._index_event(change, name, obj)
        if change == "DELETED":
            store.pop(name, None)
        else:
            store[name] = obj

    def _index_event(self, change: str, name: str, event: Obj) -> None:
        ref = event.get("involvedObject") or {}
        target = (ref.get("kind", ""), ref.get("name", ""))
        bucket = self._events_by_target.setdefault(target, {})
        if change == "DELETED":
            bucket.pop(name, None)
            if not bucket:
                del self._events_by_target[target]
        else:
            bucket[name] = event

    # queries ---------------------------------------------------------------------------------

    def service(self, name: str) -> Obj | None:
        return self.objects["services"].get(name)

    def service_names(self) -> list[str]:
        names = self.objects["services"]
        wanted = self.services if self.services is not None else names
        # cockpit's own shadow Services (api-cockpit-origin) are plumbing, not the app's
        return sorted(
            n
            for n in wanted
            if n in names
            and SHADOW_LABEL not in ((names[n].get("metadata") or {}).get("labels") or {})
        )

    def missing_services(self) -> list[str]:
        """Session services the namespace has no Service for."""
        if self.services is None:
            return []
        return sorted(n for n in self.services if n not in self.objects["services"])

    def warnings_about(self, kind: str, name: str) -> list[Obj]:
        return list(self._events_by_target.get((kind, name), {}).values())

    def selected_pods(self, service: Obj) -> list[Obj]:
        selector = (service.get("spec") or {}).get("selector")
        return [p for p in self.objects["pods"].values() if selects(selector, _labels(p))]

    def deployments_of(self, service: Obj) -> list[Obj]:
        selector = (service.get("spec") or {}).get("selector")
        return [
            d
            for d in self.objects["deployments"].values()
            if selects(selector, _template_labels(d))
        ]

    def pod_view(self, pod: Obj, now: float | None = None) -> PodView:
        return pod_view(pod, self.warnings_about("Pod", name_of(pod)), now=now)

    def views(self, now: float | None = None) -> dict[str, ServiceView]:
        """A view of every session Service that exists."""
        out = {}
        endpoints = self.objects["endpoints"]
        for name in self.service_names():
            svc = self.objects["services"][name]
            pods = [self.pod_view(p, now) for p in self.selected_pods(svc)]
            out[name] = service_view(svc, pods, self.deployments_of(svc), endpoints.get(name))
        return out

    def pods_by_service(self, now: float | None = None) -> dict[str, list[PodView]]:
        """The pods of each session Service (finished and terminating ones included: their
        output is still worth following to its end)."""
        out = {}
        for name in self.service_names():
            pods = self.selected_pods(self.objects["services"][name])
            out[name] = sorted((self.pod_view(p, now) for p in pods), key=lambda p: p.name)
            for pod in out[name]:
                self._remember_pod(pod.name, name)
        return out

    def _remember_pod(self, pod: str, service: str) -> None:
        known = self._pod_services.get(pod, ())
        if service not in known:
            self._pod_services[pod] = (*known, service)
            if len(self._pod_services) > 10_000:
                del self._pod_services[next(iter(self._pod_services))]

    def services_of_event(self, event: Obj) -> tuple[str, ...]:
        """The session services an Event is about (empty when it concerns none of them)."""
        ref = event.get("involvedObject") or {}
        kind, name = ref.get("kind", ""), ref.get("name", "")
        wanted = set(self.service_names())
        if kind in ("Service", "Endpoints"):
            found: Iterable[str] = [name] if name in wanted else []
        elif kind == "Pod":
            pod = self.objects["pods"].get(name)
            if pod is not None:
                found = [
                    s
                    for s in wanted
                    if selects(_selector(self.objects["services"][s]), _labels(pod))
                ]
            else:
                found = [s for s in self._pod_services.get(name, ()) if s in wanted]
        elif kind in ("Deployment", "ReplicaSet"):
            deploy_name = name if kind == "Deployment" else replicaset_deployment(name)
            deploy = self.objects["deployments"].get(deploy_name)
            found = (
                [
                    s
                    for s in wanted
                    if selects(_selector(self.objects["services"][s]), _template_labels(deploy))
                ]
                if deploy is not None
                else []
            )
        else:
            found = []
        return tuple(sorted(found))

    def warning_events(self) -> Iterator[Obj]:
        return iter(self.objects["events"].values())


def _labels(obj: Obj | None) -> Mapping[str, str]:
    labels: Mapping[str, str] = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return labels


def _template_labels(deployment: Obj | None) -> Mapping[str, str]:
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    labels: Mapping[str, str] = (template.get("metadata") or {}).get("labels") or {}
    return labels


def _selector(service: Obj) -> Mapping[str, str] | None:
    selector: Mapping[str, str] | None = (service.get("spec") or {}).get("selector")
    return selector


# -- rollouts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    done: bool
    failed: bool
    text: str


def rollout_status(deployment: Obj) -> RolloutStatus:
    """Where a Deployment's rollout is, by the same rules as ``kubectl rollout status``."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "")
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return RolloutStatus(False, False, f"{name}: waiting for the rollout to start")
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return RolloutStatus(False, True, f"{name}: rollout exceeded its progress deadline")
    desired = desired_replicas(deployment)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < desired:
        return RolloutStatus(False, False, f"{name}: {updated} of {desired} new pods created")
    if replicas > updated:
        old = replicas - updated
        return RolloutStatus(False, False, f"{name}: {old} old pod(s) still to stop")
    if available < updated:
        return RolloutStatus(False, False, f"{name}: {available} of {updated} new pods available")
    return RolloutStatus(True, False, f"{name}: rollout complete ({available} pods)")


def ready_pod(pods: Sequence[PodView]) -> PodView | None:
    """The pod a shell should open in: a ready one, else a running one, newest first."""
    live = [p for p in pods if not p.deleting and not p.finished]
    live.sort(key=lambda p: p.created or 0.0, reverse=True)
    for pod in live:
        if pod.ready:
            return pod
    for pod in live:
        if any(c.state == "running" for c in pod.containers):
            return pod
    return None
