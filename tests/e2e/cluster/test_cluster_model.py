"""The live model of a namespace on the real cluster: service views from watches, changes as
they happen, reconnect and resume when the API server goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from kubernetes import client

from cockpit.adapters.kube import Kube
from cockpit.core.events import ServiceChanged, ServiceRemoved
from cockpit.engine.cluster import ClusterWatcher
from tests.conftest import Cluster
from tests.e2e.cluster.cluster_env import (
    TICKER,
    Recorder,
    Relay,
    deploy,
    python_deployment,
    running,
    seq_numbers,
    service_for,
)

pytestmark = pytest.mark.cluster


async def test_the_shop_as_service_views(kube: Kube, shared_shop: str) -> None:
    rec = Recorder()
    watcher = ClusterWatcher(kube, shared_shop, ["web", "store"], rec.publish)
    async with running(watcher):
        assert rec.states() == ["connecting", "connected"]
        # The complete model is published by the time start() returns.
        assert rec.last("store") == ServiceChanged("store", ready=2, total=2)
        assert rec.last("web") == ServiceChanged("web", ready=1, total=1)
        assert rec.changes("api") == []  # not a session service
        store = watcher.views["store"]
        assert store.phase == "Ready" and store.deployments == ("store",)
        assert len(store.pods) == 2 and all(p.startswith("store-") for p in store.pods)
        await rec.wait(lambda: len(watcher.views["store"].endpoints) == 2, what="endpoints")
        assert set(watcher.views["store"].endpoints) == set(store.pods)


async def test_changes_arrive_as_they_happen(cluster: Cluster, kube: Kube, namespace: str) -> None:
    api = cluster.api()
    apps = client.AppsV1Api(api)
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, None, rec.publish)
    async with running(watcher):
        assert watcher.views == {}
        deploy(api, namespace, service_for("tick"), python_deployment("tick", TICKER))
        await rec.wait(
            lambda: rec.last("tick") == ServiceChanged("tick", ready=1, total=1), what="ready"
        )
        # total counts the wanted replicas before their pods even exist
        apps.patch_namespaced_deployment_scale("tick", namespace, {"spec": {"replicas": 2}})
        await rec.wait(lambda: (rec.last("tick") or ServiceChanged("")).total == 2, what="total 2")
        await rec.wait(
            lambda: rec.last("tick") == ServiceChanged("tick", ready=2, total=2), what="2/2"
        )
        client.CoreV1Api(api).delete_namespaced_service("tick", namespace, _preload_content=False)
        await rec.wait(lambda: ServiceRemoved("tick") in rec.events, what="removed")
        assert "tick" not in watcher.views


async def test_failing_probe_and_image_pull_are_reasons(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    api = cluster.api()
    unready = python_deployment("unready", "import time; time.sleep(3600)")
    container = unready["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"exec": {"command": ["false"]}, "periodSeconds": 1}
    missing = python_deployment("noimage", "pass")
    missing["spec"]["template"]["spec"]["containers"][0].update(
        image="docker.io/cockpit/does-not-exist:dev", imagePullPolicy="Never"
    )
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, None, rec.publish)
    async with running(watcher):
        deploy(api, namespace, service_for("unready"), unready, service_for("noimage"), missing)
        await rec.wait(
            lambda: "ReadinessProbeFailed" in (rec.last("unready") or ServiceChanged("")).reasons,
            what="ReadinessProbeFailed",
        )
        # imagePullPolicy Never with an image that is not there: ErrImageNeverPull
        await rec.wait(
            lambda: "ErrImageNeverPull" in (rec.last("noimage") or ServiceChanged("")).reasons,
            what="ErrImageNeverPull",
        )
        assert rec.last("unready").ready == 0  # type: ignore[union-attr]


async def test_reconnect_and_resume_when_the_api_server_goes_away(
    cluster: Cluster, namespace: str, relay: Relay, relay_kubeconfig: Path
) -> None:
    """Model and logs through a relay that is cut for a while: the state goes disconnected
    then connected, the change made meanwhile arrives, and the log has no gap or duplicate."""
    api = cluster.api()
    deploy(api, namespace, service_for("tick"), python_deployment("tick", TICKER))
    kube = await asyncio.to_thread(Kube.load, relay_kubeconfig)
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, ["tick"], rec.publish, on_lines=rec.on_lines)
    async with running(watcher):
        await rec.wait(lambda: len(seq_numbers(rec.texts("tick-"))) > 30, what="first lines")
        await relay.cut()
        await rec.wait(lambda: rec.states()[-1] == "disconnected", what="disconnected")
        # Meanwhile, in the cluster (through the real address): scale up.
        apps = client.AppsV1Api(api)
        await asyncio.to_thread(
            apps.patch_namespaced_deployment_scale, "tick", namespace, {"spec": {"replicas": 2}}
        )
        await asyncio.sleep(1.5)
        cut_at = len(seq_numbers(rec.texts("tick-")))
        await relay.restore()
        await rec.wait(lambda: rec.states()[-1] == "connected", what="connected again")
        assert rec.states()[-2:] == ["disconnected", "connected"]
        await rec.wait(
            lambda: rec.last("tick") == ServiceChanged("tick", ready=2, total=2), what="2/2"
        )
        # The first pod's log resumes: more lines than before the cut, none missing, none twice.
        await rec.wait(
            lambda: len(seq_numbers(rec.texts(_oldest(rec)))) > cut_at + 100, what="log resumed"
        )
        numbers = seq_numbers(rec.texts(_oldest(rec)))
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert len(watcher.views["tick"].pods) == 2
    kube.close()


def _oldest(rec: Recorder) -> str:
    """The source (pod/container) of the first tick line received."""
    return next(line.source for line in rec.lines if line.text.startswith("seq "))


_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "probes.test.cockpit.dev"},
    "spec": {
        "group": "test.cockpit.dev",
        "scope": "Namespaced",
        "names": {"plural": "probes", "singular": "probe", "kind": "Probe"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}
_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


async def _fresh_kind(kube: Kube) -> None:
    """A kind whose watch cache starts now: any older resourceVersion is Gone (410) at once.

    (On a young cluster the built-in kinds' caches still reach back to resourceVersion 1.)
    """
    from cockpit.errors import CockpitError

    with contextlib.suppress(CockpitError):
        await asyncio.to_thread(kube.json, "POST", _CRD_PATH, body=_CRD)
    for _ in range(200):
        crd = await asyncio.to_thread(kube.json, "GET", f"{_CRD_PATH}/probes.test.cockpit.dev")
        conditions = crd.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the test CRD never became Established")


async def test_relist_when_the_resource_version_is_gone(
    kube: Kube, shared_shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch from a version the server no longer keeps (410 Gone) relists and carries on."""
    from cockpit.adapters import kube as kube_module
    from cockpit.adapters.kube import Listed, NamespaceWatch

    await _fresh_kind(kube)
    try:
        monkeypatch.setitem(
            kube_module._PATHS, "probes", "/apis/test.cockpit.dev/v1/namespaces/{ns}/probes"
        )
        for name in ("one", "two"):
            probe = {"apiVersion": "test.cockpit.dev/v1", "kind": "Probe"}
            probe["metadata"] = {"name": name}
            path = f"/apis/test.cockpit.dev/v1/namespaces/{shared_shop}/probes"
            await asyncio.to_thread(kube.json, "POST", path, body=probe)
        # The server really has forgotten resourceVersion 1 for this kind.
        response = await asyncio.to_thread(kube.open_watch, "probes", shared_shop, "1")
        try:
            first = json.loads(await asyncio.to_thread(response.readline))
        finally:
            response.release_conn()
        assert first["type"] == "ERROR" and first["object"]["code"] == 410

        updates: list[object] = []
        watch = NamespaceWatch(kube, shared_shop, ["probes"], updates.extend, lambda k, s: None)
        original = kube.list_objects
        calls: list[str] = []

        def list_objects(kind: str, namespace: str) -> tuple[list[dict[str, object]], str]:
            calls.append(kind)
            items, version = original(kind, namespace)
            return items, ("1" if len(calls) == 1 else version)

        monkeypatch.setattr(kube, "list_objects", list_objects)
        try:
            await watch.start()
            for _ in range(200):
                if any(isinstance(u, Listed) for u in updates):
                    break
                await asyncio.sleep(0.05)
            relisted = [u for u in updates if isinstance(u, Listed)]
            assert relisted and relisted[0].kind == "probes"
            assert sorted(i["metadata"]["name"] for i in relisted[0].items) == ["one", "two"]
            assert calls == ["probes", "probes"]
        finally:
            await watch.stop()
    finally:
        await asyncio.to_thread(kube.json, "DELETE", f"{_CRD_PATH}/probes.test.cockpit.dev")
