"""Benchmark: the first intercept in a namespace (agent not deployed yet) against a bare pod's
create -> Running, same run.

Goal: <= 1.5x. Prints human lines, then one JSON object as the last line.

Baseline: create a pod (the python image, restricted security context, a sleep) and poll
every 20 ms until its phase is Running; median of the rounds.
Measured: ``InterceptSession.start("global")`` in a namespace with no agent, until a client
pod inside the cluster calling ``api`` by name is first answered by the local process (access
review, agent objects, pod start, host key, port-forward + SSH, shadow Service, Service patch,
kube-proxy); median of the rounds, each after ``cockpit down`` removed the agent.
Rounds alternate baseline and measured. The bench creates its own namespace and deletes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes import client  # noqa: E402

from cockpit.core.agent_spec import AgentSettings  # noqa: E402
from tests.e2e.intercept.conftest import restricted_container  # noqa: E402
from tests.e2e.intercept.intercept_env import InterceptEnv, kubeconfig  # noqa: E402

ROUNDS = 3
SLEEP = ["python3", "-c", "import time; time.sleep(3600)"]
GOAL = 1.5


async def bare_pod_running(core: Any, ns: str, name: str) -> float:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [restricted_container("sleep", "docker.io/cockpit/python:dev", SLEEP)],
        },
    }
    t0 = time.perf_counter()
    await asyncio.to_thread(core.create_namespaced_pod, ns, pod)
    while True:
        p = await asyncio.to_thread(core.read_namespaced_pod, name, ns)
        if p.status.phase == "Running":
            elapsed = time.perf_counter() - t0
            break
        await asyncio.sleep(0.02)
    await asyncio.to_thread(core.delete_namespaced_pod, name, ns, grace_period_seconds=0)
    return elapsed


async def main() -> int:
    ns = f"bench-intercept-cold-{secrets.token_hex(3)}"
    settings = AgentSettings.from_env(os.environ)
    env = await InterceptEnv.create(kubeconfig(), ns)
    try:
        core = client.CoreV1Api(env.api_client)
        local = env.local_app()
        print(f"namespace {ns}; {ROUNDS} rounds, alternating baseline and measured")
        base: list[float] = []
        cold: list[float] = []
        for i in range(ROUNDS):
            base.append(await bare_pod_running(core, ns, f"bare-{i}"))
            t0 = time.perf_counter()
            session = await env.session(f"cold{i}", local.port, settings)
            await session.start("global")
            started = time.perf_counter() - t0
            await env.prober.until("local/laptop", within=30, interval=0.01)
            cold.append(time.perf_counter() - t0)
            print(
                f"round {i + 1}: bare pod Running {base[-1]:.2f} s; cold intercept "
                f"{cold[-1]:.2f} s (set up {started:.2f} s, then the first local answer)"
            )
            await session.stop()
            await env.down()
        baseline, value = statistics.median(base), statistics.median(cold)
    finally:
        await env.close()
    ratio = value / baseline
    print(f"median: bare pod {baseline:.2f} s, cold intercept {value:.2f} s: {ratio:.2f}x")
    print(
        json.dumps(
            {
                "bench": "intercept_cold",
                "value": round(value, 3),
                "baseline": round(baseline, 3),
                "unit": "s",
                "ratio": round(ratio, 3),
                "goal": f"<= {GOAL}",
                "pass": ratio <= GOAL,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
