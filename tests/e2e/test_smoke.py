"""Smoke tests on the real cluster with the official client: the shop runs, answers, logs, execs."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client
from kubernetes.stream import portforward, stream

from tests.conftest import Cluster

pytestmark = pytest.mark.cluster


def _pods(cluster: Cluster, ns: str, app: str) -> list[client.V1Pod]:
    return (
        client.CoreV1Api(cluster.api()).list_namespaced_pod(ns, label_selector=f"app={app}").items
    )


def test_shop_deployed_and_ready(cluster: Cluster, shared_shop: str) -> None:
    apps = client.AppsV1Api(cluster.api())
    deps = {d.metadata.name: d for d in apps.list_namespaced_deployment(shared_shop).items}
    assert set(deps) == {"web", "api", "store"}
    assert deps["store"].status.ready_replicas == 2
    assert all(d.status.ready_replicas == d.spec.replicas for d in deps.values())
    eps = client.CoreV1Api(cluster.api()).read_namespaced_endpoints("store", shared_shop)
    assert sum(len(s.addresses or []) for s in eps.subsets) == 2


def _http_get_through_forward(cluster: Cluster, ns: str, pod: str, path: str) -> bytes:
    pf = portforward(
        client.CoreV1Api(cluster.api()).connect_get_namespaced_pod_portforward,
        pod,
        ns,
        ports="8080",
    )
    sock = pf.socket(8080)
    sock.setblocking(True)
    sock.settimeout(10)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    finally:
        sock.close()
    return data


def test_web_through_port_forward_answers_with_api_and_store_pods(
    cluster: Cluster, shared_shop: str
) -> None:
    web = _pods(cluster, shared_shop, "web")[0].metadata.name
    api_pods = {p.metadata.name for p in _pods(cluster, shared_shop, "api")}
    store_pods = {p.metadata.name for p in _pods(cluster, shared_shop, "store")}
    raw = _http_get_through_forward(cluster, shared_shop, web, "/")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    chain = json.loads(body)["chain"]
    assert [hop["service"] for hop in chain] == ["web", "api", "store"]
    assert chain[0]["pod"] == web
    assert chain[1]["pod"] in api_pods
    assert chain[2]["pod"] in store_pods
    assert all(hop["served_by"] == "cluster" for hop in chain)


def test_pod_logs_read_and_followed(cluster: Cluster, shared_shop: str) -> None:
    core = client.CoreV1Api(cluster.api())
    pod = _pods(cluster, shared_shop, "api")[0].metadata.name
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline and "api" not in text:
        text = core.read_namespaced_pod_log(pod, shared_shop)
        time.sleep(0.3)
    assert " api " in text  # the app's own log format: "<ts> INFO api ..."
    resp = core.read_namespaced_pod_log(
        pod, shared_shop, follow=True, _preload_content=False, since_seconds=1
    )
    try:
        got: list[str] = []
        start = time.monotonic()
        for raw in resp.stream(amt=None, decode_content=True):
            got.extend(line for line in raw.decode().splitlines() if line)
            if len(got) >= 2 or time.monotonic() - start > 15:
                break
    finally:
        resp.release_conn()
    # heartbeats arrive every ~2 s: following must deliver new lines, not just the backlog
    assert len(got) >= 2, got
    assert all(" api " in line for line in got)


def test_exec_into_pod_returns_output(cluster: Cluster, shared_shop: str) -> None:
    core = client.CoreV1Api(cluster.api())
    pod = _pods(cluster, shared_shop, "store")[0].metadata.name
    out = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        shared_shop,
        command=["python3", "-c", "import os; print('pod', os.environ['POD_NAME'])"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert out.strip() == f"pod {pod}"


def test_cluster_dns_resolves_service_names_and_nothing_upstream(
    cluster: Cluster, shared_shop: str
) -> None:
    core = client.CoreV1Api(cluster.api())
    pod = _pods(cluster, shared_shop, "web")[0].metadata.name
    script = (
        "import socket, json\n"
        f"names = ['store', 'store.{shared_shop}', 'store.{shared_shop}.svc.cluster.local']\n"
        "out = {n: socket.gethostbyname(n) for n in names}\n"
        "try:\n    socket.gethostbyname('example.com'); out['upstream'] = 'resolved'\n"
        "except OSError:\n    out['upstream'] = 'refused'\n"
        "print(json.dumps(out))\n"
    )
    out = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        shared_shop,
        command=["python3", "-c", script],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    result = json.loads(out.strip().splitlines()[-1])
    cluster_ip = core.read_namespaced_service("store", shared_shop).spec.cluster_ip
    assert result.pop("upstream") == "refused"
    assert set(result.values()) == {cluster_ip}
