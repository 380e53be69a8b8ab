"""Remote sync on the real cluster: pods to sync into (writable, read-only, without tar,
without a shell), a two-replica 'site' Deployment behind a Service, and a way to look inside."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.stream import stream

from cockpit.adapters.kube import Kube
from tests.conftest import Cluster, make_namespace

PYTHON = "docker.io/cockpit/python:dev"
PAUSE = "docker.io/cockpit/pause:dev"
SITE_DIR = "/srv/site"  # an emptyDir in the site's pods; the rest of their root is read-only


def _container(name: str, image: str, command: list[str] | None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent"}
    if command is not None:
        spec["command"] = command
    spec.update(extra)
    return spec


def pod_manifest(
    name: str, container: dict[str, Any], volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [container],
            "volumes": volumes,
        },
    }


def deployment_manifest(
    name: str, replicas: int, container: dict[str, Any], volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 8080, "targetPort": 8080}]},
    }


def wait_ready(
    api: Any, namespace: str, selector: str, count: int, timeout: float = 90
) -> list[str]:
    """Names of ``count`` ready, not terminating pods matching ``selector``."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    names: list[str] = []
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        names = [
            p.metadata.name
            for p in pods
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())
        ]
        if len(names) == count and len(pods) == count:
            return sorted(names)
        time.sleep(0.3)
    raise AssertionError(f"{selector}: {len(names)} of {count} pods ready after {timeout:.0f} s")


def run_in(api: Any, namespace: str, pod: str, command: str, container: str | None = None) -> str:
    """``sh -c command`` in a pod; its stdout (stderr included)."""
    core = client.CoreV1Api(api)
    kwargs = {"container": container} if container else {}
    out: str = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=["sh", "-c", command + " 2>&1"],
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        **kwargs,
    )
    return out


class Pods:
    """The module's test pods in their namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.api = cluster.api()

    def run(self, pod: str, command: str, container: str | None = None) -> str:
        return run_in(self.api, self.namespace, pod, command, container)


@pytest.fixture(scope="module")
def pods(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Pods]:
    """Pods for adapter tests: 'box' (python; /data writable, /ro a read-only mount),
    'notar' (tar removed from its filesystem), 'nosh' (the pause image: no shell at all)."""
    with make_namespace(cluster, request.module.__name__.rsplit(".", 1)[-1]) as namespace:
        api = cluster.api()
        core = client.CoreV1Api(api)
        sleep = ["sleep", "infinity"]
        box = _container(
            "box",
            PYTHON,
            sleep,
            volumeMounts=[
                {"name": "data", "mountPath": "/data"},
                {"name": "ro", "mountPath": "/ro", "readOnly": True},
            ],
        )
        volumes = [{"name": "data", "emptyDir": {}}, {"name": "ro", "emptyDir": {}}]
        notar = _container(
            "main", PYTHON, ["sh", "-c", "rm -f /usr/bin/tar /bin/tar && exec sleep infinity"]
        )
        for manifest in (
            pod_manifest("box", box, volumes),
            pod_manifest("notar", notar, []),
            pod_manifest("nosh", _container("main", PAUSE, None), []),
        ):
            core.create_namespaced_pod(namespace, manifest)
        for name in ("box", "notar", "nosh"):
            wait_ready(api, namespace, f"app={name}", 1)
        yield Pods(cluster, namespace)


@pytest.fixture
def kube(cluster: Cluster) -> Iterator[Kube]:
    kube = Kube.load(cluster.kubeconfig)
    yield kube
    kube.close()


def site_container() -> dict[str, Any]:
    """A web server on a read-only root with one writable directory (an emptyDir)."""
    return _container(
        "web",
        PYTHON,
        ["python3", "-m", "http.server", "8080", "-d", SITE_DIR],
        volumeMounts=[{"name": "site", "mountPath": SITE_DIR}],
        securityContext={"readOnlyRootFilesystem": True},
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    )


def deploy(
    api: Any,
    namespace: str,
    name: str,
    container: dict[str, Any],
    replicas: int = 1,
    volumes: list[dict[str, Any]] | None = None,
) -> list[str]:
    """A Deployment plus its Service; the names of its ready pods."""
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, deployment_manifest(name, replicas, container, volumes or [])
    )
    client.CoreV1Api(api).create_namespaced_service(namespace, service_manifest(name))
    return wait_ready(api, namespace, f"app={name}", replicas)


@pytest.fixture
def site(cluster: Cluster, namespace: str) -> list[str]:
    """'site': two replicas serving SITE_DIR, in a fresh namespace; its pod names."""
    return deploy(
        cluster.api(),
        namespace,
        "site",
        site_container(),
        replicas=2,
        volumes=[{"name": "site", "emptyDir": {}}],
    )
