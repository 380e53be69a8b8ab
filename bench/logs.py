"""Benchmark: following the logs of N pods with cockpit against `kubectl logs -f`, same run.

Goal: cockpit's rate >= 0.9x kubectl's, with 0 lines lost (and none twice).

Setup: a namespace of its own with a Deployment of 4 pods (docker.io/cockpit/python:dev).
Each pod waits for a trigger file, then prints a burst of 50,000 fixed-length lines as fast
as Python can write them, and waits for the next trigger. Bursts alternate between the two
followers (kubectl, cockpit, cockpit, kubectl), so both read the same pods at the same kind
of moment and drift on a busy machine hits both alike.

Baseline: one `kubectl logs -f --tail=0 POD` process per pod, concurrently, stdout to a file
on /tmp; a burst is done when every file holds its 50,000 lines (counted from the file
sizes while running, then line by line).
Measured: cockpit's engine path in one process: ``ClusterWatcher`` (watches, model) with
its pod log follower, every line parsed (timestamp, resume cursor) into a LogLine and
handed to the engine callback; lines of the burst are counted there.
Rate: the burst's lines / (time the last line arrived - time the first line arrived), so the
trigger's own latency (an exec into each pod) counts for neither side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchenv as benchenv
from kubernetes import client

from cockpit.adapters.kube import Kube
from cockpit.core.events import Event, LogLine, SourceKind
from cockpit.engine.cluster import ClusterWatcher

PODS = 4
LINES = 50_000
PAD = "x" * 60
LINE_BYTES = len(f"b0 {0:06d} {PAD}\n")  # 71: every line of a burst has this length
IMAGE = "docker.io/cockpit/python:dev"
BURST_TIMEOUT = float(os.environ.get("BENCH_BURST_TIMEOUT", "180"))

SCRIPT = f"""
import os, sys, time
k = 0
while True:
    while not os.path.exists("/tmp/go%d" % k):
        time.sleep(0.005)
    write = sys.stdout.write
    for i in range({LINES}):
        write("b%d %06d {PAD}\\n" % (k, i))
    sys.stdout.flush()
    k += 1
"""


def kubeconfig() -> str:
    return benchenv.kubeconfig("logs")


def kubectl() -> str:
    return benchenv.kubectl("logs")


def deployment() -> dict[str, object]:
    labels = {"app": "spam"}
    return {
        "metadata": {"name": "spam"},
        "spec": {
            "replicas": PODS,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "spam",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", SCRIPT],
                        }
                    ],
                },
            },
        },
    }


def setup(api: client.ApiClient, namespace: str) -> list[str]:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace, "labels": {"cockpit-bench": "1"}}})
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(namespace).items:
        if time.monotonic() > deadline:
            raise SystemExit("bench/logs: the namespace got no ServiceAccount")
        time.sleep(0.2)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "spam"},
            "spec": {"selector": {"app": "spam"}, "ports": [{"port": 80}]},
        },
    )
    client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment())
    deadline = time.monotonic() + 90
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector="app=spam").items
        running = [p for p in pods if p.status.phase == "Running"]
        if len(running) == PODS:
            return sorted(p.metadata.name for p in running)
        if time.monotonic() > deadline:
            raise SystemExit("bench/logs: pods not running after 90 s")
        time.sleep(0.3)


def trigger(kctl: str, config: str, namespace: str, pods: Sequence[str], burst: int) -> None:
    procs = [
        subprocess.Popen(
            [
                kctl,
                "--kubeconfig",
                config,
                "-n",
                namespace,
                "exec",
                pod,
                "--",
                "touch",
                f"/tmp/go{burst}",
            ],
        )
        for pod in pods
    ]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("bench/logs: could not trigger a burst")


def run_kubectl(
    kctl: str, config: str, namespace: str, pods: Sequence[str], burst: int, workdir: Path
) -> tuple[float, int, int]:
    """One burst read by kubectl: (seconds first->last line, lines received, lines expected)."""
    files = [workdir / f"{pod}.{burst}.log" for pod in pods]
    procs = []
    for pod, path in zip(pods, files, strict=True):
        with path.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [kctl, "--kubeconfig", config, "-n", namespace, "logs", "-f", "--tail=0", pod],
                    stdout=out,
                )
            )
    time.sleep(1.5)  # every follower attached
    trigger(kctl, config, namespace, pods, burst)
    target = LINES * LINE_BYTES
    first = last = 0.0
    deadline = time.monotonic() + BURST_TIMEOUT
    while time.monotonic() < deadline:
        sizes = [p.stat().st_size for p in files]
        now = time.monotonic()
        if not first and any(sizes):
            first = now
        if all(s >= target for s in sizes):
            last = now
            break
        time.sleep(0.001)
    for proc in procs:
        proc.terminate()
        proc.wait()
    received = 0
    tag = f"b{burst} ".encode()
    for path in files:
        received += sum(1 for line in path.read_bytes().splitlines() if line.startswith(tag))
    if not last:
        last = time.monotonic()
    return last - first, received, LINES * len(pods)


async def run_cockpit(
    config: str, kctl: str, namespace: str, pods: Sequence[str], burst: int
) -> tuple[float, int, int, int]:
    """One burst read by cockpit: (seconds, unique lines received, expected, duplicates)."""
    kube = await asyncio.to_thread(Kube.load, config)
    tag = f"b{burst} "
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    first = last = 0.0
    done = asyncio.Event()
    expected = LINES * len(pods)

    def on_lines(lines: Sequence[LogLine]) -> None:
        nonlocal first, last, duplicates
        now = time.monotonic()
        for line in lines:
            if line.kind is not SourceKind.POD or not line.text.startswith(tag):
                continue
            key = (line.source, line.text)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            if not first:
                first = now
        if seen and not done.is_set():
            last = now
            if len(seen) >= expected:
                done.set()

    def publish(_event: Event) -> None:
        pass

    watcher = ClusterWatcher(kube, namespace, ["spam"], publish, on_lines=on_lines, tail_lines=0)
    await watcher.start()
    try:
        await asyncio.sleep(1.5)  # every follower attached
        await asyncio.to_thread(trigger, kctl, config, namespace, pods, burst)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), BURST_TIMEOUT)
        await asyncio.sleep(0.5)  # anything late or repeated still counts
    finally:
        await watcher.stop()
        kube.close()
    return last - first, len(seen), expected, duplicates


def main() -> None:
    config, kctl = kubeconfig(), kubectl()
    kube = Kube.load(config)
    api = client.ApiClient(kube.configuration)
    namespace = f"bench-logs-{secrets.token_hex(3)}"
    pods = setup(api, namespace)
    print(f"{PODS} pods x {LINES:,} lines per burst, namespace {namespace}")
    totals = {"kubectl": [0.0, 0, 0], "cockpit": [0.0, 0, 0]}
    duplicates = 0
    try:
        with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
            for burst, side in enumerate(("kubectl", "cockpit", "cockpit", "kubectl")):
                if side == "kubectl":
                    seconds, got, want = run_kubectl(
                        kctl, config, namespace, pods, burst, Path(tmp)
                    )
                else:
                    seconds, got, want, dups = asyncio.run(
                        run_cockpit(config, kctl, namespace, pods, burst)
                    )
                    duplicates += dups
                totals[side][0] += seconds
                totals[side][1] += got
                totals[side][2] += want
                print(
                    f"burst {burst} {side:8s} {got:,}/{want:,} lines in {seconds:.2f} s "
                    f"({got / seconds if seconds else 0:,.0f} lines/s)"
                )
    finally:
        client.CoreV1Api(api).delete_namespace(namespace, _preload_content=False)
    base_s, base_got, base_want = totals["kubectl"]
    our_s, our_got, our_want = totals["cockpit"]
    baseline = base_got / base_s
    value = our_got / our_s
    lost = int(our_want - our_got)
    ratio = value / baseline
    print(f"kubectl logs -f (x{PODS}): {baseline:10,.0f} lines/s, lost {int(base_want - base_got)}")
    print(f"cockpit:               {value:10,.0f} lines/s, lost {lost}, twice {duplicates}")
    passed = ratio >= 0.9 and lost == 0 and duplicates == 0
    print(
        json.dumps(
            {
                "bench": "logs",
                "value": round(value),
                "baseline": round(baseline),
                "unit": "lines/s",
                "ratio": round(ratio, 3),
                "goal": ">= 0.9 with 0 lines lost",
                "pass": passed,
            }
        )
    )


if __name__ == "__main__":
    main()
