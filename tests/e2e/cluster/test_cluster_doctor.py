"""``cockpit doctor`` and bad input on the real cluster: a ServiceAccount user missing rights
gets the exact rules to ask for; unknown context, namespace or service, no permission, and an
API server that is down each give one clear line and a non-zero exit, and change nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from cockpit.adapters.kube import RESTARTED_AT, Kube
from cockpit.core.rbac import NEEDED, Permission, render_doctor, rules_for
from cockpit.engine.cluster import ClusterWatcher, doctor
from cockpit.errors import AccessDeniedError, ClusterError, NotFoundError
from tests.conftest import Cluster
from tests.e2e.cluster.cluster_env import (
    COCKPIT,
    Recorder,
    deploy,
    free_port,
    kubeconfig_copy,
    python_deployment,
    service_account_token,
    service_for,
)

pytestmark = pytest.mark.cluster

PORTFORWARD = Permission("create", "pods/portforward")
POD_LOG = Permission("get", "pods/log")


def kube_contexts(kubeconfig: Path) -> tuple[str, str]:
    """The kubeconfig's context names as the errors list them, and its current context: the
    tests run against whichever cluster COCKPIT_TEST_KUBECONFIG names."""
    doc = yaml.safe_load(kubeconfig.read_text())
    return ", ".join(c["name"] for c in doc["contexts"]), doc["current-context"]


def same(a: Permission, b: Permission) -> bool:
    return (a.verb, a.resource, a.group, a.name) == (b.verb, b.resource, b.group, b.name)


def withheld(perm: Permission) -> bool:
    return same(perm, PORTFORWARD) or same(perm, POD_LOG)


def run_cockpit(*args: str, kubeconfig: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    return subprocess.run(
        [*COCKPIT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def user_kubeconfig(cluster: Cluster, namespace: str, name: str, tmp_path: Path) -> Path:
    """A kubeconfig for a new ServiceAccount (no rights unless a test grants some)."""
    token = service_account_token(cluster.api(), namespace, name)
    return kubeconfig_copy(
        cluster.kubeconfig, tmp_path / f"{name}.kubeconfig", token=token, namespace=namespace
    )


def grant(cluster: Cluster, namespace: str, user: str, perms: list[Permission]) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api())
    rules = []
    for rule in rules_for(perms):
        entry = {"apiGroups": [rule.group], "resources": [rule.resource], "verbs": list(rule.verbs)}
        if rule.name:
            entry["resourceNames"] = [rule.name]
        rules.append(entry)
    role = {"metadata": {"name": user}, "rules": rules}
    try:
        rbac.create_namespaced_role(namespace, role)
    except client.ApiException:
        rbac.replace_namespaced_role(user, namespace, role)
        return
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": namespace}],
        },
    )


async def wait_allowed(kubeconfig: Path, namespace: str, perm: Permission, allowed: bool) -> None:
    """RBAC changes reach the authorizer's cache within a moment."""
    kube = await asyncio.to_thread(Kube.load, kubeconfig)
    for _ in range(100):
        (check,) = await asyncio.to_thread(kube.review_access, namespace, [perm])
        if check.allowed is allowed:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{perm.describe()} still {not allowed}")


async def test_doctor_names_each_missing_permission_with_its_rule(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = user_kubeconfig(cluster, namespace, "dev", tmp_path)
    everything_but_two = [p for p in NEEDED if not withheld(p)]
    grant(cluster, namespace, "dev", everything_but_two)
    await wait_allowed(kubeconfig, namespace, Permission("list", "pods"), True)

    result = await asyncio.to_thread(run_cockpit, "doctor", kubeconfig=kubeconfig, cwd=tmp_path)
    assert result.returncode == AccessDeniedError.exit_code
    out = result.stdout
    assert f"ok       {len(NEEDED) - 2} of {len(NEEDED)} permissions in {namespace}" in out
    assert out.count("MISSING") == 2
    assert (
        f"MISSING  create pods/portforward in {namespace} - needed for port-forwards and the "
        "agent tunnel\n"
        '         - apiGroups: [""]\n'
        '           resources: ["pods/portforward"]\n'
        '           verbs: ["create"]\n'
    ) in out
    assert (
        f"MISSING  get pods/log in {namespace} - needed for pod logs\n"
        '         - apiGroups: [""]\n'
        '           resources: ["pods/log"]\n'
        '           verbs: ["get"]\n'
    ) in out
    assert out.endswith(
        f"2 permission(s) missing. A Role (and a RoleBinding to system:serviceaccount:{namespace}:"
        f"dev) in {namespace} with these "
        "rules grants them all:\n"
        '- apiGroups: [""]\n  resources: ["pods/log"]\n  verbs: ["get"]\n'
        '- apiGroups: [""]\n  resources: ["pods/portforward"]\n  verbs: ["create"]\n'
    )
    assert result.stderr == f"cockpit: error: missing 2 permission(s) in {namespace}: " + (
        ", ".join(p.describe() for p in NEEDED if withheld(p)) + "\n"
    )

    # Following the advice fixes it.
    grant(cluster, namespace, "dev", list(NEEDED))
    await wait_allowed(kubeconfig, namespace, PORTFORWARD, True)
    result = await asyncio.to_thread(run_cockpit, "doctor", kubeconfig=kubeconfig, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.endswith("everything cockpit needs is in place\n")


async def test_a_user_without_rights(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    api = cluster.api()
    deploy(
        api,
        namespace,
        service_for("box"),
        python_deployment("box", "import time; time.sleep(3600)"),
    )
    kubeconfig = user_kubeconfig(cluster, namespace, "nobody", tmp_path)

    result = await asyncio.to_thread(run_cockpit, "doctor", kubeconfig=kubeconfig, cwd=tmp_path)
    assert result.returncode == AccessDeniedError.exit_code
    assert result.stdout.count("MISSING") == len(NEEDED)
    assert result.stderr.startswith(f"cockpit: error: missing {len(NEEDED)} permission(s) in ")
    assert len(result.stderr.splitlines()) == 1

    kube = await asyncio.to_thread(Kube.load, kubeconfig)
    report = await doctor(kube, namespace)
    assert report.namespace_exists is None  # a namespaced user may not read namespaces
    assert not report.ok and len(report.missing) == len(NEEDED)
    assert render_doctor(report)[1] == (
        f"?        namespace {namespace}: not allowed to check that it exists"
    )

    # The live view: one line saying what is forbidden, and the connection state says so.
    rec = Recorder()
    watcher = ClusterWatcher(kube, namespace, None, rec.publish)
    with pytest.raises(AccessDeniedError) as denied:
        await watcher.start()
    line = denied.value.one_line()
    assert "\n" not in line and "forbidden" in line
    assert f'User "system:serviceaccount:{namespace}:nobody" cannot list resource' in line
    assert line.endswith("('cockpit doctor' lists what is missing)")
    assert rec.states()[-1].startswith("failed: ")

    # A restart without the right to patch: refused, the Deployment untouched.
    with pytest.raises(AccessDeniedError):
        await asyncio.to_thread(kube.restart_deployment, namespace, "box")
    template = client.AppsV1Api(api).read_namespaced_deployment("box", namespace).spec.template
    assert RESTARTED_AT not in (template.metadata.annotations or {})

    # cockpit shell: not even allowed to read the Service
    result = await asyncio.to_thread(
        run_cockpit, "shell", "box", "--", "true", kubeconfig=kubeconfig, cwd=tmp_path
    )
    assert result.returncode == AccessDeniedError.exit_code
    assert result.stderr.startswith('cockpit: error: services "box" is forbidden')
    assert len(result.stderr.splitlines()) == 1


async def test_shell_without_exec_rights(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    api = cluster.api()
    deploy(
        api,
        namespace,
        service_for("box"),
        python_deployment("box", "import time; time.sleep(3600)"),
    )
    kubeconfig = user_kubeconfig(cluster, namespace, "reader", tmp_path)
    grant(cluster, namespace, "reader", [p for p in NEEDED if p.verb in ("get", "list", "watch")])
    await wait_allowed(kubeconfig, namespace, Permission("list", "pods"), True)
    apps = client.AppsV1Api(api)
    for _ in range(200):
        if (apps.read_namespaced_deployment("box", namespace).status.available_replicas or 0) >= 1:
            break
        await asyncio.sleep(0.3)
    result = await asyncio.to_thread(
        run_cockpit, "shell", "box", "--", "true", kubeconfig=kubeconfig, cwd=tmp_path
    )
    assert result.returncode == AccessDeniedError.exit_code
    assert result.stderr.startswith("cockpit: error: not allowed to exec into pod 'box-")
    assert result.stderr.endswith("(create pods/exec) ('cockpit doctor' lists what is missing)\n")


def test_api_server_down_at_start(cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = kubeconfig_copy(
        cluster.kubeconfig, tmp_path / "down.kubeconfig", server=f"https://127.0.0.1:{port}"
    )
    expected = (
        f"cockpit: error: cannot reach the Kubernetes API at https://127.0.0.1:{port}: "
        "connection refused\n"
    )
    for args in (("doctor",), ("shell", "web")):
        result = run_cockpit(*args, kubeconfig=kubeconfig, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (
            ClusterError.exit_code,
            "",
            expected,
        ), args


async def test_api_server_down_at_start_of_the_live_view(cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = kubeconfig_copy(
        cluster.kubeconfig, tmp_path / "down.kubeconfig", server=f"https://127.0.0.1:{port}"
    )
    kube = await asyncio.to_thread(Kube.load, kubeconfig)
    rec = Recorder()
    with pytest.raises(ClusterError) as down:
        await ClusterWatcher(kube, "shop", None, rec.publish, on_lines=rec.on_lines).start()
    assert down.value.one_line() == (
        f"cannot reach the Kubernetes API at https://127.0.0.1:{port}: connection refused"
    )
    assert rec.states() == ["connecting", f"failed: {down.value.message}"]
    assert rec.lines == []


def test_unknown_context_namespace_and_service(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    api = cluster.api()
    deploy(api, namespace, service_for("store"))
    kc = cluster.kubeconfig
    contexts, current = kube_contexts(kc)
    result = run_cockpit("doctor", "--context", "nope", kubeconfig=kc, cwd=tmp_path)
    assert result.returncode == NotFoundError.exit_code
    assert result.stderr == (
        f"cockpit: error: context 'nope' not found in kubeconfig {kc} (contexts: {contexts})\n"
    )
    result = run_cockpit("doctor", "--namespace", "no-such-ns", kubeconfig=kc, cwd=tmp_path)
    assert result.returncode == NotFoundError.exit_code
    assert result.stderr == (
        f"cockpit: error: namespace 'no-such-ns' not found in context '{current}'\n"
    )
    assert "MISSING  namespace no-such-ns does not exist" in result.stdout
    result = run_cockpit("shell", "web", "--namespace", "no-such-ns", kubeconfig=kc, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        NotFoundError.exit_code,
        f"cockpit: error: namespace 'no-such-ns' not found in context '{current}' "
        "(kubectl get namespaces lists them)\n",
    )
    result = run_cockpit("shell", "stroe", "--namespace", namespace, kubeconfig=kc, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        NotFoundError.exit_code,
        f"cockpit: error: service 'stroe' not found in namespace '{namespace}' "
        "(did you mean 'store'?)\n",
    )
    # The service exists but nothing runs behind it.
    result = run_cockpit("shell", "store", "--namespace", namespace, kubeconfig=kc, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        ClusterError.exit_code,
        "cockpit: error: service 'store' has no running pod to open a shell in\n",
    )


async def test_unknown_namespace_or_service_in_the_live_view(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    deploy(cluster.api(), namespace, service_for("store"))
    with pytest.raises(NotFoundError) as missing:
        await ClusterWatcher(kube, "no-such-ns", None, Recorder().publish).start()
    current = kube_contexts(cluster.kubeconfig)[1]
    assert missing.value.one_line() == f"namespace 'no-such-ns' not found in context '{current}'"
    watcher = ClusterWatcher(kube, namespace, ["store", "stroe"], Recorder().publish)
    with pytest.raises(NotFoundError) as missing:
        await watcher.start()
    assert missing.value.one_line() == (
        f"service 'stroe' not found in namespace '{namespace}' (did you mean 'store'?)"
    )
    await watcher.stop()
