"""Bad input on the real cluster: each refusal is one line of our own error type, and the
cluster is left exactly as it was (no agent, no shadow, every Service unchanged)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from cockpit.errors import AccessDeniedError, CockpitError, InterceptError
from tests.agent.conftest import App
from tests.conftest import Cluster
from tests.e2e.intercept.conftest import (
    FAST,
    Prober,
    SessionFactory,
    SessionProcess,
    cockpit_objects,
    service_specs,
    until_gone,
)

pytestmark = pytest.mark.cluster


async def _refused(
    cluster: Cluster, ns: str, sessions: SessionFactory, service: str, kind: type[CockpitError],
    needle: str, **options: Any,
) -> None:  # fmt: skip
    before = service_specs(cluster, ns)
    session = await sessions.build("me", 18080, service=service, **options)
    with pytest.raises(kind) as err:
        await session.start("global")
    line = err.value.one_line()
    assert needle in line
    assert "\n" not in line
    for _ in range(60):  # a removed agent's pod takes a moment to go
        if not cockpit_objects(cluster, ns):
            break
        await asyncio.sleep(0.5)
    assert cockpit_objects(cluster, ns) == []
    assert service_specs(cluster, ns) == before


def _create_service(cluster: Cluster, ns: str, body: dict[str, Any]) -> None:
    client.CoreV1Api(cluster.api()).create_namespaced_service(ns, body)


async def test_a_service_without_selector_is_refused(
    cluster: Cluster, shop: str, sessions: SessionFactory
) -> None:
    _create_service(cluster, shop, {"metadata": {"name": "external"},
                                    "spec": {"ports": [{"port": 80}]}})  # fmt: skip
    await _refused(cluster, shop, sessions, "external", InterceptError, "has no selector")


async def test_a_headless_service_is_refused(
    cluster: Cluster, shop: str, sessions: SessionFactory
) -> None:
    _create_service(cluster, shop, {"metadata": {"name": "api-headless"}, "spec": {
        "clusterIP": "None", "selector": {"app": "api"}, "ports": [{"port": 8080}]}})  # fmt: skip
    await _refused(cluster, shop, sessions, "api-headless", InterceptError, "is headless")


async def test_a_service_redirected_by_another_tool_is_refused(
    cluster: Cluster, shop: str, sessions: SessionFactory
) -> None:
    client.CoreV1Api(cluster.api()).patch_namespaced_service(
        "web", shop, {"metadata": {"annotations": {"telepresence.getambassador.io/x": "y"}}}
    )
    await _refused(cluster, shop, sessions, "web", InterceptError, "another tool")


async def test_a_missing_service_is_refused(
    cluster: Cluster, shop: str, sessions: SessionFactory
) -> None:
    await _refused(cluster, shop, sessions, "stroe", CockpitError, "service 'stroe' not found")


async def test_an_agent_image_that_cannot_start_is_removed_again(
    cluster: Cluster, shop: str, sessions: SessionFactory
) -> None:
    # The pause image has no python3: the container cannot start (no registry is involved).
    broken = dataclasses.replace(FAST, image="docker.io/cockpit/pause:dev")
    await _refused(cluster, shop, sessions, "api", InterceptError, "cockpit agent cannot start",
                   settings=broken)  # fmt: skip


async def test_missing_rbac_is_refused_before_anything_is_written(
    cluster: Cluster, shop: str, sessions: SessionFactory, tmp_path: Path
) -> None:
    kubeconfig = _limited_user(cluster, shop, tmp_path)
    before = service_specs(cluster, shop)
    from cockpit.engine.intercept import kube_intercept

    session = await asyncio.to_thread(
        lambda: kube_intercept(kubeconfig=str(kubeconfig), context=None, namespace=shop,
                               service="api", session_id="me", local_port=18080, settings=FAST)
    )  # fmt: skip
    with pytest.raises(AccessDeniedError) as err:
        await session.start("global")
    assert "intercept needs permission to" in err.value.one_line()
    assert f"in namespace '{shop}'" in err.value.one_line()
    assert cockpit_objects(cluster, shop) == []
    assert service_specs(cluster, shop) == before


def _limited_user(cluster: Cluster, ns: str, tmp_path: Path) -> Path:
    """A kubeconfig for a ServiceAccount that may only read services and pods."""
    api = cluster.api()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "limited"}})
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "limited"},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["get", "list"]}
            ],
        },
    )
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "limited"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "limited"},
        "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": ns}]})  # fmt: skip
    token = ""
    for _ in range(100):  # the token controller fills in the SA's secret
        sa = core.read_namespaced_service_account("limited", ns)
        if sa.secrets:
            secret = core.read_namespaced_secret(sa.secrets[0].name, ns)
            if secret.data and "token" in secret.data:
                token = base64.b64decode(secret.data["token"]).decode()
                break
        time.sleep(0.1)
    assert token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    admin_cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "limited",
        "clusters": [admin_cluster],
        "users": [{"name": "limited", "user": {"token": token}}],
        "contexts": [{"name": "limited", "context": {
            "cluster": admin_cluster["name"], "user": "limited", "namespace": ns}}],
    }  # fmt: skip
    path = tmp_path / "limited.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_another_sessions_global_intercept_is_refused_and_kept(
    cluster: Cluster, shop: str, prober: Prober, sessions: SessionFactory,
    apps: Callable[..., App],
) -> None:  # fmt: skip
    mine = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="my-laptop")
    await sessions("me", mine.port, mode="global")
    await prober.until("local/my-laptop")
    specs = service_specs(cluster, shop)
    other = await sessions.build("you", 18081)
    with pytest.raises(InterceptError, match="held by a global intercept of session me"):
        await other.start("global")
    assert (await prober.who()) == "local/my-laptop"
    assert service_specs(cluster, shop) == specs


async def test_cockpit_down_from_the_command_line_after_a_crash(
    cluster: Cluster, shop: str, prober: Prober, apps: Callable[..., App], tmp_path: Path
) -> None:
    before = service_specs(cluster, shop)
    local = apps(SERVICE="api", COCKPIT_LOCAL="1", POD_NAME="laptop")
    slow = dataclasses.replace(FAST, grace=600.0)  # the agent alone would wait 10 minutes
    proc = await asyncio.to_thread(
        SessionProcess.start, cluster.kubeconfig, shop, "me", local.port, "global", slow
    )
    await prober.until("local/laptop")
    proc.kill(signal.SIGKILL)
    proc.stop()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    cockpit = str(Path(sys.executable).parent / "cockpit")
    done = await asyncio.to_thread(
        subprocess.run, [cockpit, "down", "--namespace", shop], capture_output=True, text=True,
        env=env, timeout=120, cwd=tmp_path,  # no cockpit.yaml here: --namespace is enough
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"cockpit: namespace '{shop}': restored service(s) api; "
        "deleted service/api-cockpit-origin, rolebinding/cockpit-agent, role/cockpit-agent, "
        "serviceaccount/cockpit-agent, configmap/cockpit-agent, deployment/cockpit-agent"
    )
    await prober.until("cluster")
    assert service_specs(cluster, shop) == before
    await until_gone(cluster, shop)
