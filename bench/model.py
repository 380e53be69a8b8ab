"""Benchmark: time to the complete services model of a namespace, cockpit against kubectl.

Goal: cockpit's time <= 1.5x kubectl's.

Setup: the shop demo (3 Deployments, 3 Services, 4 pods) in a namespace of its own, ready.
Baseline: a fresh `kubectl get svc,deploy,pods -n NS -o json` process, wall time from spawn
to exit (reading the kubeconfig, connecting, three lists, printing).
Measured: from adapter start: in a running Python process, read the kubeconfig
(``Kube.load``), then ``ClusterWatcher.start()`` until every Service's ``ServiceChanged`` is
published with its pods counted (lists of services, deployments, pods, endpoints, events;
the watches started). Both sides connect afresh each time (new TLS connections).
Also shown, not judged: cockpit from process start (a new Python process that imports
cockpit and does the same), which pays the interpreter and the kubernetes client's import.
Each side runs 9 times, interleaved; medians are compared.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchenv as benchenv  # noqa: E402
from kubernetes import client, utils  # noqa: E402

from cockpit.adapters.kube import Kube  # noqa: E402
from cockpit.core.events import Event, ServiceChanged  # noqa: E402
from cockpit.engine.cluster import ClusterWatcher  # noqa: E402

ROUNDS = 9
SERVICES = ("api", "store", "web")
READY = {"api": 1, "store": 2, "web": 1}

FROM_PROCESS_START = """
import asyncio, sys, time
from cockpit.adapters.kube import Kube
from cockpit.engine.cluster import ClusterWatcher
async def main():
    kube = Kube.load(sys.argv[1])
    seen = set()
    watcher = ClusterWatcher(kube, sys.argv[2], None, lambda e: seen.add(getattr(e, "service", "")))
    await watcher.start()
    assert {"api", "store", "web"} <= seen
    await watcher.stop()
asyncio.run(main())
"""


def kubeconfig() -> str:
    return benchenv.kubeconfig("model")


def kubectl() -> str:
    return benchenv.kubectl("model")


def deploy_shop(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace, "labels": {"cockpit-bench": "1"}}})
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(namespace).items:
        if time.monotonic() > deadline:
            raise SystemExit("bench/model: the namespace got no ServiceAccount")
        time.sleep(0.2)
    manifest = REPO / "examples" / "shop" / "k8s" / "shop.yaml"
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    utils.create_from_yaml(api, yaml_objects=docs, namespace=namespace)
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + 120
    while True:
        deps = apps.list_namespaced_deployment(namespace).items
        if len(deps) == 3 and all(
            (d.status.available_replicas or 0) == d.spec.replicas for d in deps
        ):
            return
        if time.monotonic() > deadline:
            raise SystemExit("bench/model: the shop is not ready after 120 s")
        time.sleep(0.3)


def time_kubectl(kctl: str, config: str, namespace: str) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        [kctl, "--kubeconfig", config, "get", "svc,deploy,pods", "-n", namespace, "-o", "json"],
        capture_output=True,
        check=True,
    ).stdout
    elapsed = time.perf_counter() - started
    kinds = [item["kind"] for item in json.loads(out)["items"]]
    assert kinds.count("Service") == 3 and kinds.count("Pod") == 4, kinds
    return elapsed


async def time_cockpit(config: str, namespace: str) -> float:
    views: dict[str, ServiceChanged] = {}

    def publish(event: Event) -> None:
        if isinstance(event, ServiceChanged):
            views[event.service] = event

    started = time.perf_counter()
    kube = Kube.load(config)
    watcher = ClusterWatcher(kube, namespace, None, publish)
    await watcher.start()
    complete = all(s in views and views[s].ready == views[s].total == READY[s] for s in SERVICES)
    elapsed = time.perf_counter() - started
    await watcher.stop()
    kube.close()
    assert complete, views
    return elapsed


def time_process(config: str, namespace: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", FROM_PROCESS_START, config, namespace],
        check=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    return time.perf_counter() - started


def main() -> None:
    config, kctl = kubeconfig(), kubectl()
    api = client.ApiClient(Kube.load(config).configuration)
    namespace = f"bench-model-{secrets.token_hex(3)}"
    deploy_shop(api, namespace)
    print(f"shop ready in {namespace}: 3 Services, 3 Deployments, 4 pods")
    ours: list[float] = []
    theirs: list[float] = []
    process: list[float] = []
    try:
        time_kubectl(kctl, config, namespace)  # warm: kubectl's discovery cache, page cache
        asyncio.run(time_cockpit(config, namespace))
        for _ in range(ROUNDS):
            theirs.append(time_kubectl(kctl, config, namespace))
            ours.append(asyncio.run(time_cockpit(config, namespace)))
        for _ in range(3):
            process.append(time_process(config, namespace))
    finally:
        client.CoreV1Api(api).delete_namespace(namespace, _preload_content=False)
    baseline = statistics.median(theirs) * 1000
    value = statistics.median(ours) * 1000
    from_start = statistics.median(process) * 1000
    ratio = value / baseline
    print(f"kubectl get svc,deploy,pods -o json (fresh process): median {baseline:7.1f} ms")
    print(f"cockpit, from adapter start:                          median {value:7.1f} ms")
    print(f"cockpit, from process start (not judged):             median {from_start:7.1f} ms")
    print(
        json.dumps(
            {
                "bench": "model",
                "value": round(value, 1),
                "baseline": round(baseline, 1),
                "unit": "ms",
                "ratio": round(ratio, 3),
                "goal": "<= 1.5",
                "pass": ratio <= 1.5,
            }
        )
    )


if __name__ == "__main__":
    main()
