"""Crash safety on the real cluster, under load from a client pod inside it: the session
process killed (-9) or frozen (SIGSTOP), the agent pod deleted, and what is left after the
grace period and the idle TTL."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from cockpit.core.intercept import AGENT_POD_LABELS
from tests.agent.conftest import App
from tests.conftest import Cluster
from tests.e2e.intercept.conftest import (
    FAST,
    Prober,
    SessionFactory,
    SessionProcess,
    service_specs,
    until_gone,
    until_restored,
)

pytestmark = pytest.mark.cluster


def summarize(results: list[list[Any]], since: float) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        if r[0] >= since:
            key = f"{r[1]} {r[2]}" if r[1] else f"error {r[5]}"
            out[key] = out.get(key, 0) + 1
    return out


async def _crash_under_load(
    cluster: Cluster, shop: str, prober: Prober, apps: Callable[..., App], sig: int,
    within: float,
) -> None:  # fmt: skip
    before = service_specs(cluster, shop)
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop")
    # A short idle TTL: once the Service is restored, the agent removes itself too.
    settings = dataclasses.replace(FAST, grace=3.0, idle_ttl=2.0)
    proc = await asyncio.to_thread(
        SessionProcess.start, cluster.kubeconfig, shop, "me", local.port, "global", settings
    )
    try:
        await prober.until("local/laptop")
        load = await prober.start_load("http://api:8080/echo", rate=100, seconds=8)
        await asyncio.sleep(2.5)
        crashed_at = await prober.mark()
        proc.kill(sig)
        results = await prober.load_results(load)
    finally:
        proc.stop()
    before_crash = [r for r in results if r[0] < crashed_at - 0.2]
    assert [r for r in before_crash if r[2] != "local"] == [], crashed_at
    after = summarize(results, crashed_at + within)
    assert after == {"200 cluster": sum(after.values())}, after
    assert sum(after.values()) >= 100 * (8 - 2.5 - within) - 20
    # After the grace period the agent gives the Service back and, idle, deletes itself.
    await until_restored(cluster, shop, before, within=20)
    await until_gone(cluster, shop)


async def test_kill_9_of_the_session_routes_to_the_original_pods_within_1_s(
    cluster: Cluster, shop: str, prober: Prober, apps: Callable[..., App]
) -> None:
    await _crash_under_load(cluster, shop, prober, apps, signal.SIGKILL, within=1.0)


async def test_a_frozen_session_is_routed_to_the_original_pods_within_5_s(
    cluster: Cluster, shop: str, prober: Prober, apps: Callable[..., App]
) -> None:
    """SIGSTOP: the TCP connection stays up but nothing answers (a half-open link)."""
    await _crash_under_load(cluster, shop, prober, apps, signal.SIGSTOP, within=5.0)


async def test_the_session_comes_back_within_5_s_when_the_agent_pod_is_deleted(
    cluster: Cluster, shop: str, prober: Prober, sessions: SessionFactory,
    apps: Callable[..., App],
) -> None:  # fmt: skip
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop")
    session = await sessions("me", local.port, mode="personal")
    me = {"baggage": "cockpit-session=me"}
    await prober.until("local/laptop", me)
    core = client.CoreV1Api(cluster.api())
    selector = ",".join(f"{k}={v}" for k, v in AGENT_POD_LABELS.items())
    [pod] = core.list_namespaced_pod(shop, label_selector=selector).items
    t0 = time.monotonic()
    core.delete_namespaced_pod(pod.metadata.name, shop)
    back = None
    while time.monotonic() - t0 < 15:
        [(_, status, served_by, _, _, _)] = await prober.probe(headers=me)
        if (
            status == 200
            and served_by == "local"
            and session.pod is not None
            and (session.pod.name != pod.metadata.name)
        ):
            back = time.monotonic() - t0
            break
        await asyncio.sleep(0.05)
    assert back is not None, "the session did not come back"
    assert back < 5.0, back
    assert session.mode == "personal"
    assert (await prober.who()) == "cluster"  # plain traffic still to the original pods
