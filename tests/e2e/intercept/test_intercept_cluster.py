"""Intercepts on the real cluster, seen from a client pod inside it calling ``api`` by name:
global and personal routing, toggles without Kubernetes writes, outbound through the tunnel,
restore on stop, and the agent pod's posture."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from kubernetes import client

from cockpit.adapters.agent import AgentCluster
from cockpit.core.intercept import AGENT_NAME, AGENT_POD_LABELS, ANNOTATION
from cockpit.core.pss import hardening_violations, restricted_violations
from tests.agent.conftest import App
from tests.conftest import Cluster
from tests.e2e.intercept.conftest import (
    Outbound,
    Prober,
    SessionFactory,
    cockpit_objects,
    service_specs,
    until_gone,
    until_restored,
)

pytestmark = pytest.mark.cluster

ME = {"baggage": "cockpit-session=me"}
YOU = {"baggage": "cockpit-session=you"}


async def test_global_intercept_answers_from_the_local_process_and_off_from_the_pods(
    cluster: Cluster, shop: str, prober: Prober, sessions: SessionFactory,
    apps: Callable[..., App],
) -> None:  # fmt: skip
    before = service_specs(cluster, shop)
    assert (await prober.who()) == "cluster"
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop")
    session = await sessions("me", local.port, mode="global")
    await prober.until("local/laptop")

    api_svc = client.CoreV1Api(cluster.api()).read_namespaced_service("api", shop)
    rv = api_svc.metadata.resource_version
    assert api_svc.spec.selector == dict(AGENT_POD_LABELS)
    assert ANNOTATION in api_svc.metadata.annotations

    assert (await session.toggle("global", False)).ok
    assert (await prober.who()) == "cluster"
    assert (await session.toggle("global", True)).ok
    assert (await prober.who()) == "local/laptop"
    # Toggling is routing inside the agent: the Service was not written again.
    again = client.CoreV1Api(cluster.api()).read_namespaced_service("api", shop)
    assert again.metadata.resource_version == rv

    await session.stop()
    await prober.until("cluster")
    await until_restored(cluster, shop, before)
    assert [o for o in cockpit_objects(cluster, shop) if o.startswith("service/")] == []


async def test_personal_intercepts_of_two_sessions_and_plain_traffic(
    shop: str, prober: Prober, sessions: SessionFactory, apps: Callable[..., App]
) -> None:
    mine = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="my-laptop")
    yours = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="your-laptop")
    me = await sessions("me", mine.port, mode="personal")
    you = await sessions("you", yours.port, mode="personal")
    await prober.until("local/your-laptop", YOU)
    for keepalive in (False, True):
        results = {
            name: await prober.probe(n=3, headers=headers, keepalive=keepalive)
            for name, headers in (("me", ME), ("you", YOU), ("plain", None))
        }
        assert {r[2] + "/" + str(r[3]) for r in results["me"]} == {"local/my-laptop"}
        assert {r[2] + "/" + str(r[3]) for r in results["you"]} == {"local/your-laptop"}
        assert {r[2] for r in results["plain"]} == {"cluster"}
    overlap = await you.toggle("global", True)
    assert not overlap.ok
    assert "held by a personal intercept of session me" in overlap.message
    assert (await prober.who(headers=YOU)) == "local/your-laptop"  # refused: nothing changed
    assert me.mode == "personal"


async def test_web_in_the_cluster_calls_the_local_api_which_calls_store_in_the_cluster(
    shop: str, prober: Prober, sessions: SessionFactory, apps: Callable[..., App],
    outbound: Outbound,
) -> None:  # fmt: skip
    """web (cluster) -> api (here) -> store (cluster, over the session's SSH connection)."""
    session = await sessions.build("me")
    await outbound.start("store", session=session)
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop",
                 STORE_URL=outbound.url("store"))  # fmt: skip
    session.local_port = local.port
    await session.start("global")
    await prober.until("local/laptop")
    answer = await prober.call("/fetch", {"url": "http://web:8080/"})
    assert answer["status"] == 200, answer["body"]
    chain = json.loads(answer["body"])["chain"]
    assert [(h["service"], h["served_by"]) for h in chain] == [
        ("web", "cluster"),
        ("api", "local"),
        ("store", "cluster"),
    ]
    assert chain[1]["pod"] == "laptop"
    forward = outbound.forwards.get("store:8080")
    assert forward is not None and forward.listener is not None
    assert forward.listener.routes["tunnel"].connections_total >= 1


async def test_the_agent_pod_is_restricted_and_least_privileged(
    cluster: Cluster, shop: str, sessions: SessionFactory, apps: Callable[..., App]
) -> None:
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop")
    await sessions("me", local.port)
    core = client.CoreV1Api(cluster.api())
    [pod] = core.list_namespaced_pod(
        shop, label_selector=",".join(f"{k}={v}" for k, v in AGENT_POD_LABELS.items())
    ).items
    spec = cluster.api().sanitize_for_serialization(pod.spec)
    assert restricted_violations(spec, pod.metadata.annotations) == []
    assert hardening_violations(spec) == []
    assert pod.spec.containers[0].security_context.read_only_root_filesystem is True
    # No Service exposes the SSH port: only the API server's port-forward reaches it.
    for svc in core.list_namespaced_service(shop).items:
        assert all(p.target_port not in (2222, "ssh") for p in svc.spec.ports), svc.metadata.name
    role = client.RbacAuthorizationV1Api(cluster.api()).read_namespaced_role(AGENT_NAME, shop)
    verbs = {v for r in role.rules for v in r.verbs}
    assert verbs <= {"get", "list", "patch", "delete"}
    assert json.dumps(cluster.api().sanitize_for_serialization(role.rules)).count("secrets") == 0


async def test_cockpit_down_leaves_nothing_and_every_service_as_before(
    cluster: Cluster, shop: str, ops: AgentCluster, prober: Prober, sessions: SessionFactory,
    apps: Callable[..., App],
) -> None:  # fmt: skip
    before = service_specs(cluster, shop)
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop")
    session = await sessions("me", local.port, mode="global")
    await prober.until("local/laptop")
    assert cockpit_objects(cluster, shop)
    report = await asyncio.to_thread(ops.teardown)
    assert report.restored == ["api"]
    assert "deployment/cockpit-agent" in report.deleted
    await prober.until("cluster")
    assert service_specs(cluster, shop) == before
    await until_gone(cluster, shop)
    again = await asyncio.to_thread(ops.teardown)
    assert again.summary(shop) == f"nothing of cockpit's in namespace '{shop}'"
    await session.stop()
