"""The namespace model: pods selected by a service, readiness, restarts, reasons, events."""

from __future__ import annotations

from typing import Any

import pytest

from cockpit.core.events import Level, ServiceChanged, ServiceRemoved, SourceKind
from cockpit.core.kubemodel import (
    ContainerView,
    EventOccurrences,
    NamespaceModel,
    container_view,
    diff_views,
    event_line,
    event_text,
    event_time,
    parse_time,
    pod_view,
    probe_failures,
    ready_pod,
    replicaset_deployment,
    rollout_status,
    selects,
    service_view,
    sort_reasons,
)

T0 = "2024-05-01T10:00:00Z"
T0_EPOCH = 1714557600.0


def container(
    name: str = "app",
    *,
    ready: bool = True,
    restarts: int = 0,
    running: bool = True,
    waiting: str | None = None,
    terminated: tuple[str, int] | None = None,
    last: tuple[str, int] | None = None,
    cid: str = "containerd://c1",
    last_cid: str = "containerd://c0",
    started: str = T0,
) -> dict[str, Any]:
    state: dict[str, Any]
    if waiting is not None:
        state = {"waiting": {"reason": waiting}}
    elif terminated is not None:
        state = {
            "terminated": {"reason": terminated[0], "exitCode": terminated[1], "containerID": cid}
        }
    elif running:
        state = {"running": {"startedAt": started}}
    else:
        state = {}
    status: dict[str, Any] = {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "state": state,
        "lastState": {},
    }
    if waiting is None:
        status["containerID"] = cid
    if last is not None:
        status["lastState"] = {
            "terminated": {"reason": last[0], "exitCode": last[1], "containerID": last_cid}
        }
    return status


def pod(
    name: str,
    labels: dict[str, str] | None = None,
    *,
    phase: str = "Running",
    ready: bool = True,
    containers: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    conditions: list[dict[str, Any]] | None = None,
    created: str = T0,
    reason: str | None = None,
) -> dict[str, Any]:
    statuses = containers if containers is not None else [container(ready=ready)]
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    conds += conditions or []
    meta: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "labels": labels if labels is not None else {"app": "store"},
        "creationTimestamp": created,
    }
    if deleting:
        meta["deletionTimestamp"] = T0
    status: dict[str, Any] = {"phase": phase, "conditions": conds, "containerStatuses": statuses}
    if reason:
        status["reason"] = reason
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": s["name"]} for s in statuses] or [{"name": "app"}]},
        "status": status,
    }


def service(name: str = "store", selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"selector": {"app": name} if selector is None else selector},
    }


def deployment(
    name: str = "store",
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    *,
    generation: int = 1,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": labels or {"app": name}}},
        },
        "status": status or {},
    }


def warning(
    name: str,
    kind: str,
    target: str,
    reason: str,
    message: str,
    *,
    count: int = 1,
    last: str = T0,
    field_path: str = "",
    type_: str = "Warning",
    uid: str | None = None,
) -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": kind, "name": target}
    if field_path:
        ref["fieldPath"] = field_path
    return {
        "metadata": {"name": name, "uid": uid or f"uid-{name}"},
        "type": type_,
        "reason": reason,
        "message": message,
        "count": count,
        "lastTimestamp": last,
        "involvedObject": ref,
    }


# -- small pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", T0_EPOCH),
        ("2024-05-01T10:00:00.5Z", T0_EPOCH + 0.5),
        ("2024-05-01T10:00:00.123456789Z", T0_EPOCH + 0.123456789),
        ("2024-05-01T12:00:00+02:00", T0_EPOCH),
        ("2024-05-01T08:30:00-01:30", T0_EPOCH),
        ("", None),
        (None, None),
        ("garbage-not-a-time", None),
    ],
)
def test_parse_time(text: str | None, expected: float | None) -> None:
    got = parse_time(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"app": "store"}, {"app": "store", "tier": "x"}, True),
        ({"app": "store", "tier": "x"}, {"app": "store"}, False),
        ({"app": "store"}, {"app": "web"}, False),
        ({}, {"app": "store"}, False),  # no selector selects nothing
        (None, {"app": "store"}, False),
        ({"app": "store"}, None, False),
    ],
)
def test_selects(selector: Any, labels: Any, expected: bool) -> None:
    assert selects(selector, labels) is expected


def test_replicaset_name_maps_to_its_deployment() -> None:
    assert replicaset_deployment("store-7d9f8c6b5") == "store"
    assert replicaset_deployment("my-app-7d9f8c6b5") == "my-app"
    assert replicaset_deployment("plain") == "plain"


# -- containers and pods ---------------------------------------------------------------------


def test_container_view_of_a_running_container() -> None:
    view = container_view(container(restarts=2, last=("Error", 1)))
    assert view.state == "running" and view.ready and view.restarts == 2
    assert view.container_id == "containerd://c1"
    assert view.last_container_id == "containerd://c0"
    assert (view.last_reason, view.last_exit_code) == ("Error", 1)
    assert view.started_at == pytest.approx(T0_EPOCH)
    assert view.log_instance == "containerd://c1"


@pytest.mark.parametrize(
    ("view", "instance"),
    [
        (ContainerView("a", state="running", container_id="c1", last_container_id="c0"), "c1"),
        (ContainerView("a", state="waiting", container_id="", last_container_id="c0"), "c0"),
        (ContainerView("a", state="waiting"), ""),  # never started: nothing to read
        (ContainerView("a", state="terminated", container_id="c1", last_container_id="c0"), "c1"),
        (ContainerView("a", state="terminated", container_id="", last_container_id="c0"), "c0"),
    ],
)
def test_log_instance_follows_the_kubelets_rules(view: ContainerView, instance: str) -> None:
    assert view.log_instance == instance
    assert view.has_output is bool(instance)


def test_a_healthy_pod_has_no_reasons() -> None:
    view = pod_view(pod("store-1"))
    assert view.ready and view.reasons == () and view.restarts == 0
    assert view.spec_containers == ("app",)


@pytest.mark.parametrize(
    ("statuses", "reasons"),
    [
        ([container(ready=False, waiting="CrashLoopBackOff", restarts=4, last=("Error", 1))],
         ("CrashLoopBackOff",)),
        ([container(ready=False, waiting="ImagePullBackOff")], ("ImagePullBackOff",)),
        ([container(ready=False, waiting="ErrImagePull")], ("ErrImagePull",)),
        ([container(ready=False, waiting="CreateContainerConfigError")],
         ("CreateContainerConfigError",)),
        ([container(ready=False, waiting="ContainerCreating")], ("ContainerCreating",)),
        # OOMKilled stays visible after the restart, while the new instance runs
        ([container(restarts=1, last=("OOMKilled", 137))], ("OOMKilled",)),
        ([container(ready=False, waiting="CrashLoopBackOff", restarts=3, last=("OOMKilled", 137))],
         ("CrashLoopBackOff", "OOMKilled")),
        ([container(ready=False, terminated=("Error", 2))], ("Error",)),
        ([container(ready=False)], ("NotReady",)),
        ([container("a"), container("b", ready=False, waiting="CrashLoopBackOff")],
         ("CrashLoopBackOff",)),
    ],
)  # fmt: skip
def test_pod_reasons_from_container_states(
    statuses: list[dict[str, Any]], reasons: tuple[str, ...]
) -> None:
    ready = all(s["ready"] for s in statuses)
    view = pod_view(pod("p", containers=statuses, ready=ready))
    assert view.reasons == reasons
    assert view.ready is ready


def test_restarts_sum_over_containers() -> None:
    view = pod_view(pod("p", containers=[container("a", restarts=2), container("b", restarts=3)]))
    assert view.restarts == 5


def test_unschedulable_and_evicted_pods() -> None:
    pending = pod(
        "p",
        phase="Pending",
        ready=False,
        containers=[],
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    )
    assert pod_view(pending).reasons == ("Unschedulable",)
    evicted = pod("p", phase="Failed", ready=False, containers=[], reason="Evicted")
    view = pod_view(evicted)
    assert view.reasons == ("Evicted",) and view.finished


def test_a_pending_pod_without_detail_says_pending() -> None:
    assert pod_view(pod("p", phase="Pending", ready=False, containers=[])).reasons == ("Pending",)


def test_init_container_failures() -> None:
    data = pod("p", phase="Pending", ready=False, containers=[])
    data["status"]["initContainerStatuses"] = [
        container("init", ready=False, waiting="CrashLoopBackOff", restarts=2)
    ]
    assert pod_view(data).reasons == ("Init:CrashLoopBackOff",)
    data["status"]["initContainerStatuses"] = [
        container("init", ready=False, waiting="PodInitializing")
    ]
    assert pod_view(data).reasons == ("Pending",)


def test_a_deleting_pod_is_not_ready() -> None:
    view = pod_view(pod("p", deleting=True))
    assert view.deleting and not view.ready


def readiness_event(
    last: str = "2024-05-01T10:00:30Z", container_name: str = "app"
) -> dict[str, Any]:
    return warning(
        "p.1", "Pod", "p", "Unhealthy",
        'Readiness probe failed: Get "http://10.0.0.1:8080/healthz": connection refused',
        last=last, field_path=f"spec.containers{{{container_name}}}", count=7,
    )  # fmt: skip


def test_probe_failures_are_read_from_unhealthy_events() -> None:
    found = probe_failures([readiness_event(), warning("x", "Pod", "p", "BackOff", "Back-off")])
    assert len(found) == 1
    assert (found[0].probe, found[0].container) == ("Readiness", "app")
    assert found[0].last_seen == pytest.approx(T0_EPOCH + 30)


def test_failing_readiness_probe_is_a_reason_while_not_ready() -> None:
    unready = pod("p", containers=[container(ready=False)], ready=False)
    assert pod_view(unready, [readiness_event()]).reasons == ("ReadinessProbeFailed",)
    # Once ready again, an old failure event says nothing.
    assert pod_view(pod("p"), [readiness_event()]).reasons == ()


def test_probe_failure_of_a_previous_instance_is_ignored() -> None:
    restarted = pod(
        "p", containers=[container(ready=False, started="2024-05-01T10:05:00Z")], ready=False
    )
    assert pod_view(restarted, [readiness_event()]).reasons == ("NotReady",)


def test_liveness_failures_show_for_a_while() -> None:
    event = warning(
        "p.2", "Pod", "p", "Unhealthy",
        "Liveness probe failed: HTTP probe failed with statuscode: 500",
        last="2024-05-01T10:00:30Z",
    )  # fmt: skip
    assert pod_view(pod("p"), [event], now=T0_EPOCH + 40).reasons == ("LivenessProbeFailed",)
    assert pod_view(pod("p"), [event], now=T0_EPOCH + 500).reasons == ()


def test_probe_event_for_another_container_is_ignored() -> None:
    data = pod("p", containers=[container("app", ready=False)], ready=False)
    assert pod_view(data, [readiness_event(container_name="sidecar")]).reasons == ("NotReady",)


# -- services --------------------------------------------------------------------------------


def views_of(pods: list[dict[str, Any]], **kwargs: Any) -> Any:
    return service_view(service(), [pod_view(p) for p in pods], **kwargs)


def test_service_counts_ready_and_total() -> None:
    view = views_of(
        [pod("store-1"), pod("store-2", ready=False, containers=[container(ready=False)])]
    )
    assert (view.ready, view.total, view.phase) == (1, 2, "Degraded")
    assert view.pods == ("store-1", "store-2")
    assert view.reasons == ("NotReady",)


def test_service_ignores_finished_and_deleting_pods() -> None:
    view = views_of(
        [
            pod("store-1"),
            pod("store-old", deleting=True),
            pod("store-done", phase="Succeeded", ready=False, containers=[]),
        ]
    )
    assert (view.ready, view.total, view.pods) == (1, 1, ("store-1",))


def test_desired_replicas_count_as_missing_pods() -> None:
    view = views_of([pod("store-1")], deployments=[deployment(replicas=3)])
    assert (view.ready, view.total, view.phase) == (1, 3, "Degraded")
    assert view.deployments == ("store",)


def test_scaled_to_zero_and_no_selector() -> None:
    assert views_of([], deployments=[deployment(replicas=0)]).reasons == ("ScaledToZero",)
    assert views_of([]).reasons == ("NoPods",)
    headless = service_view(service(selector={}), [])
    assert (headless.phase, headless.reasons) == ("NoSelector", ("NoSelector",))


def test_deployment_failures_are_reasons() -> None:
    failing = deployment(
        status={
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"},
            ]
        }
    )
    view = views_of([pod("store-1")], deployments=[failing])
    assert view.reasons == ("ProgressDeadlineExceeded", "FailedCreate")


def test_reasons_are_unique_and_most_actionable_first() -> None:
    assert sort_reasons(["NotReady", "CrashLoopBackOff", "NotReady", "OOMKilled", ""]) == (
        "OOMKilled",
        "CrashLoopBackOff",
        "NotReady",
    )


def test_endpoints_name_the_pods_behind_the_service() -> None:
    endpoints = {
        "subsets": [
            {
                "addresses": [
                    {"ip": "10.0.0.2", "targetRef": {"kind": "Pod", "name": "store-2"}},
                    {"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": "store-1"}},
                ],
                "notReadyAddresses": [{"ip": "10.0.0.3", "targetRef": {"name": "store-3"}}],
            }
        ]
    }
    assert views_of([pod("store-1")], endpoints=endpoints).endpoints == ("store-1", "store-2")


def test_diff_views_publishes_only_what_changed() -> None:
    one = views_of([pod("store-1")])
    two = views_of([pod("store-1"), pod("store-2")])
    assert diff_views({}, {"store": one}) == [ServiceChanged("store", ready=1, total=1)]
    assert diff_views({"store": one}, {"store": one}) == []
    assert diff_views({"store": one}, {"store": two}) == [ServiceChanged("store", ready=2, total=2)]
    assert diff_views({"store": one}, {}) == [ServiceRemoved("store")]


# -- the namespace model ---------------------------------------------------------------------


def shop_model(services: list[str] | None = None) -> NamespaceModel:
    model = NamespaceModel(services)
    model.replace("services", [service("store"), service("web")])
    model.replace("deployments", [deployment("store", 2), deployment("web", 1)])
    model.replace(
        "pods",
        [
            pod("store-7d9f8c6b5-aaaaa", {"app": "store"}),
            pod("store-7d9f8c6b5-bbbbb", {"app": "store"}),
            pod("web-5c6d7f8b9-ccccc", {"app": "web"}),
            pod("other-1", {"app": "other"}),
        ],
    )
    model.replace("endpoints", [])
    model.replace("events", [])
    return model


def test_model_folds_a_namespace_into_service_views() -> None:
    views = shop_model().views()
    assert sorted(views) == ["store", "web"]
    assert (views["store"].ready, views["store"].total) == (2, 2)
    assert views["web"].pods == ("web-5c6d7f8b9-ccccc",)


def test_model_limits_views_to_the_session_services() -> None:
    model = shop_model(["store", "missing"])
    assert list(model.views()) == ["store"]
    assert model.missing_services() == ["missing"]


def test_model_applies_watch_events() -> None:
    model = shop_model()
    crashing = pod(
        "store-7d9f8c6b5-bbbbb",
        ready=False,
        containers=[
            container(ready=False, waiting="CrashLoopBackOff", restarts=3, last=("Error", 1))
        ],
    )
    model.apply("pods", "MODIFIED", crashing)
    view = model.views()["store"]
    assert (view.ready, view.total, view.restarts) == (1, 2, 3)
    assert view.reasons == ("CrashLoopBackOff",)
    model.apply("pods", "DELETED", crashing)
    assert model.views()["store"].pods == ("store-7d9f8c6b5-aaaaa",)
    model.apply("services", "DELETED", service("web"))
    assert list(model.views()) == ["store"]


def test_model_keeps_only_warning_events() -> None:
    model = shop_model()
    model.apply("events", "ADDED", warning("n", "Pod", "x", "Scheduled", "ok", type_="Normal"))
    model.apply("events", "ADDED", warning("w", "Pod", "x", "BackOff", "Back-off"))
    assert list(model.objects["events"]) == ["w"]
    assert [e["reason"] for e in model.warnings_about("Pod", "x")] == ["BackOff"]
    model.apply("events", "DELETED", warning("w", "Pod", "x", "BackOff", "Back-off"))
    assert model.warnings_about("Pod", "x") == []


def test_readiness_failure_event_reaches_the_service_view() -> None:
    model = shop_model()
    name = "store-7d9f8c6b5-aaaaa"
    model.apply("pods", "MODIFIED", pod(name, ready=False, containers=[container(ready=False)]))
    event = readiness_event()
    event["involvedObject"]["name"] = name
    model.apply("events", "ADDED", event)
    assert model.views()["store"].reasons == ("ReadinessProbeFailed",)


def test_relisting_events_replaces_the_index() -> None:
    model = shop_model()
    model.apply("events", "ADDED", warning("w", "Pod", "x", "BackOff", "Back-off"))
    model.replace("events", [warning("v", "Pod", "y", "Failed", "boom")])
    assert model.warnings_about("Pod", "x") == []
    assert len(model.warnings_about("Pod", "y")) == 1


@pytest.mark.parametrize(
    ("kind", "name", "services"),
    [
        ("Pod", "store-7d9f8c6b5-aaaaa", ("store",)),
        ("Pod", "other-1", ()),
        ("Service", "web", ("web",)),
        ("Endpoints", "store", ("store",)),
        ("Deployment", "store", ("store",)),
        ("ReplicaSet", "web-5c6d7f8b9", ("web",)),
        ("ReplicaSet", "nothing-123", ()),
        ("Node", "node-1", ()),
    ],
)
def test_events_are_attributed_to_services(kind: str, name: str, services: tuple[str, ...]) -> None:
    model = shop_model()
    model.pods_by_service()
    assert model.services_of_event(warning("e", kind, name, "R", "m")) == services


def test_events_of_a_deleted_pod_still_reach_its_service() -> None:
    model = shop_model()
    model.pods_by_service()  # the follower looked at the pods while they existed
    model.apply("pods", "DELETED", pod("store-7d9f8c6b5-aaaaa"))
    event = warning("e", "Pod", "store-7d9f8c6b5-aaaaa", "Killing", "Stopping container")
    assert model.services_of_event(event) == ("store",)


def test_pods_by_service_includes_terminating_pods() -> None:
    model = shop_model(["store"])
    model.apply("pods", "MODIFIED", pod("store-7d9f8c6b5-aaaaa", deleting=True))
    pods = model.pods_by_service()["store"]
    assert [p.name for p in pods] == ["store-7d9f8c6b5-aaaaa", "store-7d9f8c6b5-bbbbb"]
    assert pods[0].deleting


# -- events as log lines ---------------------------------------------------------------------


def test_event_text_and_line() -> None:
    event = warning(
        "e", "Pod", "store-1", "BackOff", "Back-off restarting\n failed container", count=5
    )
    assert event_text(event) == "Pod/store-1: BackOff: Back-off restarting failed container (x5)"
    line = event_line(event, "store", fallback_ts=0.0)
    assert line.kind is SourceKind.EVENT and line.level is Level.WARNING
    assert (line.source, line.service, line.ts) == ("events", "store", T0_EPOCH)


def test_event_time_prefers_last_timestamp_then_event_time() -> None:
    event = {"lastTimestamp": None, "eventTime": "2024-05-01T10:00:01.500000Z"}
    assert event_time(event) == pytest.approx(T0_EPOCH + 1.5)
    assert event_time({"series": {"lastObservedTime": T0}}) == pytest.approx(T0_EPOCH)
    assert event_time({}) is None


def test_event_occurrences_report_each_once() -> None:
    seen = EventOccurrences()
    first = warning("e", "Pod", "p", "BackOff", "m", count=1)
    assert seen.is_new(first)
    assert not seen.is_new(first)  # relisted: the same occurrence
    again = warning("e", "Pod", "p", "BackOff", "m", count=2, last="2024-05-01T10:00:10Z")
    assert seen.is_new(again)
    assert not seen.is_new(first)  # an older state never counts again


def test_event_occurrences_are_bounded() -> None:
    seen = EventOccurrences(max_tracked=3)
    for i in range(10):
        assert seen.is_new(warning(f"e{i}", "Pod", "p", "R", "m"))
    assert len(seen._seen) == 3


# -- rollouts and shells ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generation", "status", "done", "text"),
    [
        (2, {"observedGeneration": 1}, False, "store: waiting for the rollout to start"),
        (2, {"observedGeneration": 2, "updatedReplicas": 1, "replicas": 2},
         False, "store: 1 of 2 new pods created"),
        (2, {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3, "availableReplicas": 2},
         False, "store: 1 old pod(s) still to stop"),
        (2, {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1},
         False, "store: 1 of 2 new pods available"),
        (2, {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2},
         True, "store: rollout complete (2 pods)"),
    ],
)  # fmt: skip
def test_rollout_status(generation: int, status: dict[str, Any], done: bool, text: str) -> None:
    result = rollout_status(deployment(generation=generation, status=status))
    assert (result.done, result.failed, result.text) == (done, False, text)


def test_rollout_past_its_deadline_failed() -> None:
    status = {
        "observedGeneration": 1,
        "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
    }
    result = rollout_status(deployment(status=status))
    assert result.failed and not result.done


def test_ready_pod_prefers_ready_then_running_newest_first() -> None:
    old = pod_view(pod("a", created="2024-05-01T09:00:00Z"))
    new = pod_view(pod("b", created="2024-05-01T11:00:00Z"))
    unready = pod_view(pod("c", ready=False, containers=[container(ready=False)]))
    crashing = pod_view(
        pod("d", ready=False, containers=[container(ready=False, waiting="CrashLoopBackOff")])
    )
    assert ready_pod([old, new, unready]) == new
    assert ready_pod([unready, crashing]) == unready
    assert ready_pod([crashing]) is None
    assert ready_pod([]) is None


def test_cockpit_shadow_services_are_not_app_services() -> None:
    from cockpit.core.intercept import SHADOW_LABEL
    from cockpit.core.kubemodel import NamespaceModel

    model = NamespaceModel()
    model.replace("services", [
        {"metadata": {"name": "api"}, "spec": {"selector": {"app": "api"}}},
        {"metadata": {"name": "api-cockpit-origin", "labels": {SHADOW_LABEL: "api"}},
         "spec": {"selector": {"app": "api"}}},
    ])  # fmt: skip
    assert model.service_names() == ["api"]
