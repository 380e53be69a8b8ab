"""Benchmark: a warm intercept toggle (agent running, Service already pointed at it) until the
first request is served by the local process, against the time a plain Service selector patch
takes to move traffic, same run.

Goal: <= 0.1x. Prints human lines, then one JSON object as the last line.

Both are seen by the same client: a pod inside the cluster sending 300 requests per second
(new connection each) and recording, per request, its start, duration and which pod answered.
For each change the bench marks the time on the client's clock, then makes the change; the
latency is from the mark to the start of the first request answered by the new side (the
moment from which the client's requests reach the new side). Printed too, in the JSON line's
``*_end`` keys: to the end of that first answer, which adds the request's own trip and the
client's delays in reading it (the client is a Python pod on a shared 2-core node).
Baseline: Service ``flip`` (selector app=store) patched to app=api (and back): endpoints
controller + kube-proxy. Measured: ``InterceptSession.toggle("global", True)`` (and off):
a routing message to the agent over SSH. Median of the rounds.
The bench creates its own namespace and deletes it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes import client  # noqa: E402

from tests.e2e.intercept.intercept_env import InterceptEnv, kubeconfig  # noqa: E402

ROUNDS = 5
RATE = 300.0
SETTLE = 2.5  # seconds between changes: kube-proxy has long finished
GOAL = 0.1


def first_after(
    results: list[list[Any]], t0: float, new_side: Callable[[list[Any]], bool], end: bool = False
) -> float:
    """Seconds from ``t0`` to the start (or the ``end``) of the first request started after it
    that the new side answered."""
    times = [
        r[0] + (r[4] if end else 0.0) - t0
        for r in results
        if r[0] >= t0 and r[1] == 200 and new_side(r)
    ]
    if not times:
        raise RuntimeError("the change never showed")
    return min(times)


def ms(seconds: list[float]) -> str:
    return ", ".join(f"{x * 1000:.0f}" for x in seconds) + " ms"


async def measure(
    env: InterceptEnv, url: str, change: Callable[[bool], Awaitable[None]],
    new_side: Callable[[list[Any]], bool],
) -> tuple[list[float], list[float]]:  # fmt: skip
    """Alternate the change on/off ROUNDS times under load; latency of each 'on' to the start
    and to the end of the first answer from the new side."""
    seconds = ROUNDS * 2 * SETTLE + 2
    load = await env.prober.start_load(url, RATE, seconds)
    await asyncio.sleep(1.0)
    marks = []
    for _ in range(ROUNDS):
        marks.append(await env.prober.mark())
        await change(True)
        await asyncio.sleep(SETTLE)
        await change(False)
        await asyncio.sleep(SETTLE)
    results = await env.prober.load_results(load, within=seconds + 60)
    failed = sum(1 for r in results if r[1] != 200)
    if failed:
        print(f"  ({failed} of {len(results)} requests failed)")
    return (
        [first_after(results, t0, new_side) for t0 in marks],
        [first_after(results, t0, new_side, end=True) for t0 in marks],
    )


async def main() -> int:
    ns = f"bench-intercept-toggle-{secrets.token_hex(3)}"
    env = await InterceptEnv.create(kubeconfig(), ns)
    try:
        core = client.CoreV1Api(env.api_client)
        flip = {
            "metadata": {"name": "flip"},
            "spec": {"selector": {"app": "store"}, "ports": [{"port": 8080, "targetPort": 8080}]},
        }
        await asyncio.to_thread(core.create_namespaced_service, ns, flip)

        async def patch_selector(on: bool) -> None:
            body = {"spec": {"selector": {"app": "api" if on else "store"}}}
            await asyncio.to_thread(core.patch_namespaced_service, "flip", ns, body)

        local = env.local_app()
        session = await env.session("bench", local.port)
        await session.start(None)  # warm: agent running, Service pointed at it, intercept off
        await env.prober.until("cluster", within=10)

        rpc: list[float] = []

        async def toggle(on: bool) -> None:
            t = time.perf_counter()
            result = await session.toggle("global", on)
            rpc.append(time.perf_counter() - t)
            if not result.ok:
                raise RuntimeError(result.message)

        print(f"namespace {ns}; {ROUNDS} rounds each under {RATE:.0f} requests/s")
        patched, patched_end = await measure(
            env, "http://flip:8080/echo", patch_selector, lambda r: str(r[3]).startswith("api-")
        )
        print("selector patch -> traffic moved (start of the first answer from the new side): "
              + ms(patched) + "; its end: " + ms(patched_end))  # fmt: skip
        toggled, toggled_end = await measure(
            env, "http://api:8080/echo", toggle, lambda r: r[2] == "local"
        )
        print("intercept toggle -> first local answer (start): " + ms(toggled)
              + "; its end: " + ms(toggled_end))  # fmt: skip
        print("toggle round trip to the agent: " + ", ".join(f"{x * 1000:.1f}" for x in rpc)
              + " ms")  # fmt: skip
        await session.stop()
        baseline, value = statistics.median(patched), statistics.median(toggled)
        baseline_end, value_end = statistics.median(patched_end), statistics.median(toggled_end)
    finally:
        await env.close()
    ratio = value / baseline
    ratio_end = value_end / baseline_end
    print(f"median: selector patch {baseline * 1000:.0f} ms, toggle {value * 1000:.1f} ms: "
          f"{ratio:.3f}x (to the end of the answer: {baseline_end * 1000:.0f} ms, "
          f"{value_end * 1000:.1f} ms: {ratio_end:.3f}x)")  # fmt: skip
    print(
        json.dumps(
            {
                "bench": "intercept_toggle",
                "value": round(value * 1000, 1),
                "baseline": round(baseline * 1000, 1),
                "unit": "ms",
                "ratio": round(ratio, 4),
                "goal": f"<= {GOAL}",
                "pass": ratio <= GOAL,
                "value_end": round(value_end * 1000, 1),
                "baseline_end": round(baseline_end * 1000, 1),
                "ratio_end": round(ratio_end, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
