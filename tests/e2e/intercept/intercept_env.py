"""A namespace set up for intercepts, outside pytest too (the benchmarks use it): the shop
deployed, the in-cluster prober pod reachable through a port-forward, local app processes and
sessions on the real adapters, all removed by ``close``."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from cockpit.adapters.agent import AgentCluster, ApiJson
from cockpit.adapters.portforward import ApiServer, FixedTarget, PodTarget, PortForwardListener
from cockpit.core.agent_spec import AgentSettings
from cockpit.engine.intercept import InterceptSession, kube_intercept
from tests.agent.conftest import App, start_app
from tests.conftest import Cluster, deploy_shop
from tests.e2e.intercept.conftest import PROBER_IMAGE, Prober, restricted_container

HERE = Path(__file__).resolve().parent


def kubeconfig() -> str:
    for candidate in (
        os.environ.get("COCKPIT_TEST_KUBECONFIG"),
        os.environ.get("KUBECONFIG"),
        "/var/lib/cockpit-dev/admin.kubeconfig",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit("no kubeconfig (set KUBECONFIG)")


async def start_prober(api_client: Any, api: ApiServer, ns: str) -> Prober:
    """The prober pod (tests/e2e/intercept/prober.py), Running and answering."""
    core = client.CoreV1Api(api_client)
    script = (HERE / "prober.py").read_text()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "prober", "labels": {"app": "prober"}},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    **restricted_container("prober", PROBER_IMAGE, ["python3", "-c", script]),
                    # The measuring client: without a request it is BestEffort, the last to get
                    # a CPU on a busy node, and its own delays would swamp what it measures.
                    "resources": {"requests": {"cpu": "100m"}},
                }
            ],
        },
    }
    await asyncio.to_thread(core.create_namespaced_pod, ns, pod)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        p = await asyncio.to_thread(core.read_namespaced_pod, "prober", ns)
        if p.status.phase == "Running":
            break
        await asyncio.sleep(0.2)
    listener = PortForwardListener(api, FixedTarget(PodTarget(ns, "prober", 9000)),
                                   host="127.0.0.1", port=0)  # fmt: skip
    await listener.start()
    prober = Prober(listener)
    for _ in range(100):  # the server inside starts a moment after the container
        try:
            await prober.call("/healthz")
            break
        except OSError:
            await asyncio.sleep(0.1)
    return prober


class InterceptEnv:
    def __init__(self, config: str, ns: str, api_client: Any, prober: Prober) -> None:
        self.config = config
        self.ns = ns
        self.api_client = api_client
        self.prober = prober
        self.apps: list[App] = []

    @classmethod
    async def create(cls, config: str, ns: str) -> InterceptEnv:
        cluster = Cluster(Path(config), started_here=False, dev=False)
        api_client = cluster.api()
        core = client.CoreV1Api(api_client)
        body = {"metadata": {"name": ns, "labels": {"bench": "1"}}}
        await asyncio.to_thread(core.create_namespace, body)
        for _ in range(150):  # pods need the namespace's default ServiceAccount
            if (await asyncio.to_thread(core.list_namespaced_service_account, ns)).items:
                break
            await asyncio.sleep(0.2)
        await asyncio.to_thread(deploy_shop, cluster, ns)
        prober = await start_prober(api_client, ApiServer.from_kubeconfig(config), ns)
        return cls(config, ns, api_client, prober)

    def local_app(self, **env: str) -> App:
        app = start_app(**{"SERVICE": "api", "COCKPIT_LOCAL": "1", "POD_NAME": "laptop", **env})
        self.apps.append(app)
        return app

    async def session(
        self, session_id: str, local_port: int, settings: AgentSettings | None = None
    ) -> InterceptSession:
        return await asyncio.to_thread(
            lambda: kube_intercept(kubeconfig=self.config, context=None, namespace=self.ns,
                                   service="api", session_id=session_id, local_port=local_port,
                                   settings=settings or AgentSettings())
        )  # fmt: skip

    def ops(self) -> AgentCluster:
        return AgentCluster(ApiJson.from_kubeconfig(self.config), self.ns)

    async def down(self) -> None:
        """``cockpit down``, then wait until the agent's pods are gone."""
        ops = self.ops()
        await asyncio.to_thread(ops.teardown)
        for _ in range(300):
            if not await asyncio.to_thread(ops.agent_pods):
                break
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for app in self.apps:
            app.stop()
        await self.prober.listener.close()
        core = client.CoreV1Api(self.api_client)
        await asyncio.to_thread(core.delete_namespace, self.ns, propagation_policy="Background")
