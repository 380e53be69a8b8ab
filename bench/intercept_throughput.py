"""Benchmark: throughput and small-request rate through an intercept against
`kubectl port-forward` to the same app, same run.

Goal: >= 1.0x on BOTH (MB/s of a 100 MB GET /bytes, and GET /healthz over 4 keep-alive
connections for ~5 s). The JSON line's value/baseline/ratio are those of the WORSE of the two
ratios; both ratios are extra keys. Prints human lines, then one JSON object as the last line.

Both paths carry the traffic across the API server's port-forward once, and run the same
client code (bench/portforward.py's) against the same program (examples/shop/app.py):
Baseline: a client here -> `kubectl port-forward pod/<api pod>` -> the api pod.
Measured: a client pod in the cluster -> Service ``api`` (globally intercepted) -> the agent
-> SSH over the port-forward -> this session -> app.py running here.
Rounds alternate. The bench creates its own namespace and deletes it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes import client  # noqa: E402

from bench.portforward import (  # noqa: E402
    RATE_CONNECTIONS,
    RATE_SECONDS,
    download,
    request_rate,
    start_kubectl,
)
from tests.e2e.intercept.intercept_env import InterceptEnv, kubeconfig  # noqa: E402

SIZE = 100_000_000
ROUNDS = 3
GOAL = 1.0


async def main() -> int:
    ns = f"bench-intercept-throughput-{secrets.token_hex(3)}"
    config = kubeconfig()
    env = await InterceptEnv.create(config, ns)
    kube_proc = None
    try:
        core = client.CoreV1Api(env.api_client)
        [pod] = core.list_namespaced_pod(ns, label_selector="app=api").items
        kube_proc, kube_port = await asyncio.to_thread(start_kubectl, config, ns, pod.metadata.name)
        local = env.local_app(LOG_INTERVAL="60")
        session = await env.session("bench", local.port)
        await session.start("global")
        await env.prober.until("local/laptop", within=10)
        print(f"namespace {ns}; {ROUNDS} rounds; kubectl port-forward to {pod.metadata.name}")
        mbps: dict[str, list[float]] = {"kubectl": [], "intercept": []}
        rps: dict[str, list[float]] = {"kubectl": [], "intercept": []}
        target = {"host": "api", "port": 8080}
        for i in range(ROUNDS):
            mbps["kubectl"].append(await asyncio.to_thread(download, "127.0.0.1", kube_port, SIZE))
            answer = await env.prober.call("/download", {**target, "size": SIZE})
            mbps["intercept"].append(float(answer["mbps"]))
            rps["kubectl"].append(await asyncio.to_thread(request_rate, "127.0.0.1", kube_port))
            answer = await env.prober.call(
                "/rate", {**target, "seconds": RATE_SECONDS, "connections": RATE_CONNECTIONS}
            )
            rps["intercept"].append(float(answer["rps"]))
            print(
                f"round {i + 1}: kubectl {mbps['kubectl'][-1]:.1f} MB/s "
                f"{rps['kubectl'][-1]:.0f} req/s; intercept {mbps['intercept'][-1]:.1f} MB/s "
                f"{rps['intercept'][-1]:.0f} req/s"
            )
        await session.stop()
    finally:
        if kube_proc is not None:
            kube_proc.terminate()
            kube_proc.wait(10)
        await env.close()
    med = {k: statistics.median(v) for k, v in mbps.items()}
    medr = {k: statistics.median(v) for k, v in rps.items()}
    ratio_mbps = med["intercept"] / med["kubectl"]
    ratio_rps = medr["intercept"] / medr["kubectl"]
    print(f"median throughput: kubectl {med['kubectl']:.1f} MB/s, intercept "
          f"{med['intercept']:.1f} MB/s ({ratio_mbps:.2f}x)")  # fmt: skip
    print(f"median request rate: kubectl {medr['kubectl']:.0f}/s, intercept "
          f"{medr['intercept']:.0f}/s ({ratio_rps:.2f}x)")  # fmt: skip
    if ratio_mbps <= ratio_rps:
        value, baseline, unit, ratio = med["intercept"], med["kubectl"], "MB/s", ratio_mbps
    else:
        value, baseline, unit, ratio = medr["intercept"], medr["kubectl"], "req/s", ratio_rps
    print(
        json.dumps(
            {
                "bench": "intercept_throughput",
                "value": round(value, 1),
                "baseline": round(baseline, 1),
                "unit": unit,
                "ratio": round(ratio, 3),
                "goal": f">= {GOAL}",
                "pass": ratio_mbps >= GOAL and ratio_rps >= GOAL,
                "throughput_ratio": round(ratio_mbps, 3),
                "request_rate_ratio": round(ratio_rps, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
