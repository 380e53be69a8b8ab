"""Multiplexed pod logs on the real cluster: pods attached and dropped as they come and go, no
gap or duplicate when a pod is deleted mid-stream, crash loops with the previous container's
lines and the Warning events in the same stream."""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes import client

from cockpit.adapters.kube import Kube
from cockpit.core.events import Level, ServiceChanged, SourceKind
from cockpit.engine.cluster import ClusterWatcher
from tests.conftest import Cluster
from tests.e2e.cluster.cluster_env import (
    TICKER,
    Recorder,
    deploy,
    pod_names,
    python_deployment,
    running,
    seq_numbers,
    service_for,
)

pytestmark = pytest.mark.cluster

# Prints a few lines tagged with this instance's id, then fails.
CRASHER = """
import os, sys, time
boot = os.urandom(3).hex()
for i in range(3):
    print("boot %s line %d" % (boot, i))
time.sleep(float(os.environ.get("LIVE", "0")))
sys.exit(3)
"""


def boots(texts: list[str]) -> list[str]:
    return sorted({t.split()[1] for t in texts if t.startswith("boot ")})


async def test_deleting_a_pod_mid_stream_loses_and_repeats_nothing(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    api = cluster.api()
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, None, rec.publish, on_lines=rec.on_lines)
    async with running(watcher):
        # Created after the watcher started: followed from its first line.
        deploy(api, namespace, service_for("tick"), python_deployment("tick", TICKER, grace=5))
        await rec.wait(lambda: len(pod_names(api, namespace, "tick")) == 1, what="pod")
        (first,) = pod_names(api, namespace, "tick")
        await rec.wait(lambda: len(rec.texts(first)) > 100, what="lines from the first pod")
        assert watcher.logs is not None and watcher.logs.following == [f"{first}/main"]
        await asyncio.to_thread(
            client.CoreV1Api(api).delete_namespaced_pod, first, namespace, _preload_content=False
        )
        # Its last words arrive; the replacement is attached and followed from its start.
        await rec.wait(lambda: any(t.startswith("bye ") for t in rec.texts(first)), what="bye")
        await rec.wait(
            lambda: [p for p in pod_names(api, namespace, "tick") if p != first], what="new pod"
        )
        (second,) = [p for p in pod_names(api, namespace, "tick") if p != first]
        await rec.wait(lambda: len(rec.texts(second)) > 20, what="lines from the new pod")
        await rec.wait(
            lambda: watcher.logs.following == [f"{second}/main"], within=60, what="old dropped"
        )
        texts = rec.texts(first)
        numbers = seq_numbers(texts)
        assert numbers == list(range(len(numbers))), "a gap or a duplicate"
        assert texts[-1] == f"bye {numbers[-1] + 1}"  # nothing after its last line either
        assert seq_numbers(rec.texts(second))[:5] == [0, 1, 2, 3, 4]
        line = next(x for x in rec.lines if x.source.startswith(second))
        assert (line.service, line.kind, line.stream) == ("tick", SourceKind.POD, "stdout")
        assert abs(line.ts - time.time()) < 60


async def test_a_crash_loop_shows_its_reason_previous_lines_and_warning_events(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    api = cluster.api()
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, ["crash"], rec.publish, on_lines=rec.on_lines)
    deploy(api, namespace, service_for("crash"))
    async with running(watcher):
        deploy(api, namespace, python_deployment("crash", CRASHER))
        await rec.wait(
            lambda: "CrashLoopBackOff" in (rec.last("crash") or ServiceChanged("")).reasons,
            within=60,
            what="CrashLoopBackOff",
        )
        # Every instance's lines, once each.
        await rec.wait(lambda: len(boots(rec.texts("crash-"))) >= 2, within=30, what="2 boots")
        texts = rec.texts("crash-")
        for boot in boots(texts):
            assert [t for t in texts if t.startswith(f"boot {boot} ")] == [
                f"boot {boot} line {i}" for i in range(3)
            ]
        await rec.wait(
            lambda: [x for x in rec.lines if x.kind is SourceKind.EVENT and "BackOff" in x.text],
            what="BackOff event",
        )
        event = next(x for x in rec.lines if x.kind is SourceKind.EVENT and "BackOff" in x.text)
        assert event.level is Level.WARNING and event.service == "crash"
        assert event.source == "events" and event.text.startswith("Pod/crash-")
        notes = [x.text for x in rec.lines if x.kind is SourceKind.COCKPIT]
        assert any("restarted (Error, exit code 3)" in n for n in notes), notes
        last = rec.last("crash")
        assert last is not None and last.ready == 0 and last.restarts >= 1


async def test_attaching_to_a_restarted_container_shows_the_previous_one(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    """A container that already restarted before the session: its previous instance's last
    lines (previous=true) come first, then the current one's."""
    api = cluster.api()
    crash = python_deployment("crash", CRASHER)
    crash["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "LIVE", "value": "6"}]
    deploy(api, namespace, service_for("crash"), crash)
    core = client.CoreV1Api(api)

    def running_after_a_restart() -> bool:
        for pod in core.list_namespaced_pod(namespace).items:
            for status in pod.status.container_statuses or ():
                if status.restart_count >= 1 and status.state.running is not None:
                    return True
        return False

    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(running_after_a_restart):
        assert time.monotonic() < deadline, "no restarted container"
        await asyncio.sleep(0.5)
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, ["crash"], rec.publish, on_lines=rec.on_lines)
    async with running(watcher):
        await rec.wait(lambda: rec.texts("crash-", stream="stdout"), what="current lines")
        previous = rec.texts("crash-", stream="previous")
        current = rec.texts("crash-", stream="stdout")
        assert len(boots(previous)) == 1 and len(boots(current)) == 1
        assert boots(previous) != boots(current)
        assert [t.split()[-1] for t in previous] == ["0", "1", "2"]
        notes = [x.text for x in rec.lines if x.kind is SourceKind.COCKPIT]
        assert notes == ["last lines of the previous main container (Error):"]
        # the previous instance's lines come first
        first = next(i for i, x in enumerate(rec.lines) if x.text in current)
        assert all(x.stream != "previous" for x in rec.lines[first:])
