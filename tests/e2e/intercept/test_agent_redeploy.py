"""An agent deployed while a removed one's pod is still going away (`cockpit down`, or the
idle TTL, then `cockpit up` at once) starts: the old pod, terminated on purpose, is not taken
for the new agent failing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from cockpit.adapters.agent import AgentCluster, ApiJson
from cockpit.core.intercept import AGENT_POD_LABELS
from tests.conftest import Cluster
from tests.e2e.intercept.conftest import FAST

pytestmark = pytest.mark.cluster

HOLD = "cockpit.dev/test-hold"


@pytest.fixture
def removed_agent_pod(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A pod with the agent's labels whose container exited 0 and that is being deleted: what
    the old agent's pod looks like for the seconds between its exit and its removal (a
    finalizer holds it there for the whole test)."""
    core = client.CoreV1Api(cluster.api())
    name = "cockpit-agent-removed"
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": name, "labels": dict(AGENT_POD_LABELS), "finalizers": [HOLD]},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "agent", "image": "docker.io/cockpit/python:dev",
                            "imagePullPolicy": "IfNotPresent", "command": ["true"]}],
        },
    })  # fmt: skip
    try:
        for _ in range(240):
            if core.read_namespaced_pod(name, namespace).status.phase == "Succeeded":
                break
            time.sleep(0.25)
        else:
            pytest.fail("the stand-in for the removed agent's pod did not run to completion")
        core.delete_namespaced_pod(name, namespace)
        yield name
    finally:
        core.patch_namespaced_pod(name, namespace, {"metadata": {"finalizers": None}})


async def test_an_agent_deployed_while_a_removed_ones_pod_goes_away_starts(
    cluster: Cluster, namespace: str, removed_agent_pod: str
) -> None:
    core = client.CoreV1Api(cluster.api())
    old = core.read_namespaced_pod(removed_agent_pod, namespace)
    assert old.metadata.deletion_timestamp is not None
    assert old.status.container_statuses[0].state.terminated.exit_code == 0
    ops = AgentCluster(ApiJson.from_kubeconfig(str(cluster.kubeconfig)), namespace, FAST)
    pod, created = await asyncio.to_thread(ops.ensure_agent, 60)
    assert created and pod.name != removed_agent_pod
    assert core.read_namespaced_pod(pod.name, namespace).metadata.deletion_timestamp is None
