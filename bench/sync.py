"""Benchmark: a saved file until it is present in the pod (remote sync), against one
``kubectl exec POD -- true`` round trip into the same pod, same run.

Goal: <= 2.0x. Prints human lines, then one JSON object as the last line.

Measured: a running sync rule (the real FileWatcher, the cluster watch telling which pod
runs, tar over exec); the clock starts before the file is written and stops when the rule
publishes ``in-sync`` for that change — published after the exec returned, which is after
``tar -x`` in the pod exited, so the file is there (each round then reads it back from the pod,
outside the timing, to prove it). Baseline: ``kubectl exec POD -- true`` as a subprocess, the
way a script would push a change without cockpit (before even copying anything). Rounds
alternate between the two; medians compared. The bench creates its own namespace and deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes import client, config  # noqa: E402
from kubernetes.stream import stream  # noqa: E402

from bench._benchenv import kubeconfig, kubectl  # noqa: E402
from cockpit.adapters.kube import Kube  # noqa: E402
from cockpit.adapters.podsync import KubePodFiles  # noqa: E402
from cockpit.core.config import parse_config  # noqa: E402
from cockpit.core.events import Event, Level, LogLine, SyncChanged  # noqa: E402
from cockpit.engine.cluster import ClusterWatcher  # noqa: E402
from cockpit.engine.sync import RemoteSync, RuleSync  # noqa: E402

ROUNDS = 9
GOAL = 2.0
IMAGE = "docker.io/cockpit/python:dev"
REMOTE = "/srv/site/www"


class Recorder:
    """The session bus, as far as a sync rule uses it: wakes the bench on each sync state."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.last: SyncChanged | None = None

    def now(self) -> float:
        return time.time()

    def publish(self, event: Event) -> None:
        if isinstance(event, SyncChanged):
            self.last = event
            self.changed.set()

    def ingest(self, lines: Sequence[LogLine]) -> None:
        pass

    def end_of_stream(self) -> None:
        pass

    def say(self, text: str, level: Level = Level.INFO) -> int:
        return 0

    def alert(
        self, key: str, service: str, title: str, detail: str, level: Level, log_seq: int
    ) -> None:
        print(f"alert: {title}", file=sys.stderr)


def deploy(api: client.ApiClient, ns: str) -> str:
    container = {
        "name": "web",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", "infinity"],
        "volumeMounts": [{"name": "site", "mountPath": "/srv/site"}],
    }
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "site"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "site"}},
            "template": {
                "metadata": {"labels": {"app": "site"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [container],
                    "volumes": [{"name": "site", "emptyDir": {}}],
                },
            },
        },
    }
    client.AppsV1Api(api).create_namespaced_deployment(ns, body)
    client.CoreV1Api(api).create_namespaced_service(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "site"},
            "spec": {"selector": {"app": "site"}, "ports": [{"port": 8080}]},
        },
    )
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pod in core.list_namespaced_pod(ns, label_selector="app=site").items:
            conditions = pod.status.conditions or ()
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                return str(pod.metadata.name)
        time.sleep(0.3)
    raise SystemExit("bench/sync: the pod did not become ready in 120 s")


def read_back(api: client.ApiClient, ns: str, pod: str, name: str) -> str:
    out: str = stream(
        client.CoreV1Api(api).connect_get_namespaced_pod_exec,
        pod,
        ns,
        command=["cat", f"{REMOTE}/{name}"],
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
    )
    return out


def timed_run(argv: list[str]) -> float:
    """Seconds one run of ``argv`` takes (timed in the thread that runs it)."""
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


async def wait_in_sync(bus: Recorder, syncs_before: int, rule: RuleSync, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        last = bus.last
        if rule.syncs > syncs_before and last is not None and last.state == "in-sync":
            return
        if last is not None and last.state == "failed":
            raise SystemExit(f"bench/sync: the sync failed: {last.reason}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f"bench/sync: no sync in {within:.0f} s (last: {last})")
        bus.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bus.changed.wait(), left)


async def run(kc: str, kubectl_bin: str, ns: str, api: client.ApiClient) -> dict[str, object]:
    pod = deploy(api, ns)
    print(f"pod {pod} ready in namespace {ns}")
    kube = Kube.load(kc)
    bus = Recorder()
    watcher = ClusterWatcher(kube, ns, None, bus.publish)
    with tempfile.TemporaryDirectory(prefix="cockpit-bench-sync-") as tmp:
        src = Path(tmp)
        (src / "index.html").write_text("<h1>start</h1>\n")
        text = f"services:\n  site:\n    sync: [{{local: {src}, remote: {REMOTE}}}]\n"
        sync = RemoteSync(parse_config(text), "", ns, KubePodFiles(kube), bus)
        (rule,) = sync.rules
        await watcher.start()
        await sync.start()
        watcher.on_pods(sync.update_pods)
        try:
            await wait_in_sync(bus, 0, rule, 60)  # the initial full sync
            measured: list[float] = []
            baseline: list[float] = []
            argv = [kubectl_bin, "--kubeconfig", kc, "-n", ns, "exec", pod, "--", "true"]
            await asyncio.to_thread(timed_run, argv)  # warm kubectl's caches
            for i in range(ROUNDS):
                baseline.append(await asyncio.to_thread(timed_run, argv))

                name, text = f"page-{i}.html", f"<h1>round {i}</h1>\n"
                before = rule.syncs
                t0 = time.perf_counter()
                (src / name).write_text(text)
                await wait_in_sync(bus, before, rule, 30)
                measured.append(time.perf_counter() - t0)
                got = await asyncio.to_thread(read_back, api, ns, pod, name)
                if got != text:
                    raise SystemExit(f"bench/sync: {name} in the pod reads {got!r}")
                print(
                    f"round {i}: save -> in pod {measured[-1] * 1000:6.1f} ms; "
                    f"kubectl exec -- true {baseline[-1] * 1000:6.1f} ms"
                )
                await asyncio.sleep(0.2)
        finally:
            await sync.stop()
            await watcher.stop()
            kube.close()
    value = statistics.median(measured)
    base = statistics.median(baseline)
    ratio = value / base
    load = os.getloadavg()[0]
    print(
        f"save -> file in the pod: median {value * 1000:.1f} ms "
        f"(min {min(measured) * 1000:.1f}, max {max(measured) * 1000:.1f}); "
        f"kubectl exec -- true: median {base * 1000:.1f} ms "
        f"(min {min(baseline) * 1000:.1f}, max {max(baseline) * 1000:.1f}); load {load:.2f}"
    )
    return {
        "bench": "sync",
        "value": round(value * 1000, 1),
        "baseline": round(base * 1000, 1),
        "unit": "ms",
        "ratio": round(ratio, 3),
        "goal": f"<= {GOAL}",
        "pass": ratio <= GOAL,
    }


def main() -> None:
    kc = kubeconfig("sync")
    kubectl_bin = kubectl("sync")
    cfg = client.Configuration()
    config.load_kube_config(config_file=kc, client_configuration=cfg)
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)
    ns = f"bench-sync-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"cockpit-bench": "1"}}})
    try:
        deadline = time.monotonic() + 30
        while not core.list_namespaced_service_account(ns).items:
            if time.monotonic() > deadline:
                raise SystemExit("bench/sync: the namespace has no default ServiceAccount")
            time.sleep(0.2)
        result = asyncio.run(run(kc, kubectl_bin, ns, api))
    finally:
        core.delete_namespace(ns, propagation_policy="Background", grace_period_seconds=0)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
