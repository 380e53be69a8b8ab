"""`cockpit up` headless on the real cluster: the local service gets the cluster's env, reaches
the cluster's services through the session's forwards, and the whole namespace is in the stream."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from cockpit.errors import NotFoundError
from tests.conftest import REPO, Cluster

pytestmark = pytest.mark.cluster
COCKPIT = Path(sys.executable).parent / "cockpit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_up_headless_runs_api_locally_against_the_cluster(
    cluster: Cluster, shared_shop: str, tmp_path: Path
) -> None:
    port = free_port()
    (tmp_path / "cockpit.yaml").write_text(
        f"namespace: {shared_shop}\n"
        "services:\n"
        "  api:\n"
        f"    command: [{sys.executable!r}, {str(REPO / 'examples/shop/app.py')!r}]\n"
        f"    port: {port}\n"
        f"    env: {{SERVICE: api, PORT: '{port}', BIND: 127.0.0.1, LOG_INTERVAL: '0.5'}}\n"
    )
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    proc = subprocess.Popen(
        [str(COCKPIT), "up", "api", "--headless"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    seen: list[dict[str, Any]] = []

    def wait_for(pred: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for ev in seen:
            if pred(ev):
                return ev
        while time.monotonic() < deadline:
            try:
                ev = events.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise AssertionError(f"cockpit exited {proc.returncode}: {err}") from None
                continue
            seen.append(ev)
            if pred(ev):
                return ev
        raise AssertionError(f"not seen in {timeout} s; last events: {seen[-5:]}")

    try:
        wait_for(lambda e: e["type"] == "ProcessChanged" and e["status"] == "ready")
        store = wait_for(lambda e: e["type"] == "ServiceChanged" and e["service"] == "store")
        assert (store["ready"], store["total"]) == (2, 2)
        fwd = wait_for(lambda e: e["type"] == "ForwardChanged" and e["name"] == "store:8080")
        assert fwd["local"].startswith("127.0.0.")
        # the local api's STORE_URL was rewritten to the forward: the chain crosses into the cluster
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            chain = json.loads(resp.read())["chain"]
        assert [hop["service"] for hop in chain] == ["api", "store"]
        assert chain[0]["served_by"] == "local"
        assert chain[1]["served_by"] == "cluster" and chain[1]["pod"].startswith("store-")
        # remote pods' logs are in the same stream
        wait_for(lambda e: e["type"] == "LogLine" and e["kind"] == "pod" and e["service"] == "web")
        # the secret imported from the cluster never shows in the stream
        secret = "dev-store-token-3f9a1c"  # examples/shop/k8s/shop.yaml
        assert not any(secret in json.dumps(ev) for ev in seen)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]
    with socket.socket() as s:  # the local process is gone with the session
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_init_from_cluster_names_the_namespace_services(
    cluster: Cluster, shared_shop: str, tmp_path: Path
) -> None:
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    args = [str(COCKPIT), "init", "--service", "api", "--command", "python app.py"]
    done = subprocess.run(
        [*args, "--namespace", shared_shop, "--from-cluster"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "cockpit.yaml").read_text()
    assert f'namespace: "{shared_shop}"' in text
    assert "port: 8080" in text
    assert "store: {}  # stays in the cluster" in text and "web: {}" in text
    bad = subprocess.run(
        [*args[:3], "apii", "--namespace", shared_shop, "--from-cluster", "--force"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0
    assert (
        bad.stderr.strip()
        == f"cockpit: error: service 'apii' in namespace '{shared_shop}' not found"
    )
    typo = subprocess.run(
        [*args, "--namespace", "no-such-ns", "--from-cluster", "--force"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    context = yaml.safe_load(cluster.kubeconfig.read_text())["current-context"]
    assert (typo.returncode, typo.stderr) == (
        NotFoundError.exit_code,
        f"cockpit: error: namespace 'no-such-ns' not found in context '{context}' "
        "(kubectl get namespaces lists them)\n",
    )
    assert f'namespace: "{shared_shop}"' in (tmp_path / "cockpit.yaml").read_text()


def test_init_from_cluster_resolves_a_named_target_port(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Service port 80 -> targetPort "http" -> container port 8081: the local process listens
    where the container does, so init writes 8081."""
    from tests.e2e.cluster.cluster_env import deploy, python_deployment

    front = python_deployment("front", "import time; time.sleep(3600)")
    front["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 8081}
    ]
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "front"},
        "spec": {"selector": {"app": "front"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }  # fmt: skip
    deploy(cluster.api(), namespace, front, service)
    core = client.CoreV1Api(cluster.api())
    for _ in range(240):  # until a ready pod gives the name its port
        subsets = core.read_namespaced_endpoints("front", namespace).subsets or []
        if any(s.addresses for s in subsets):
            break
        time.sleep(0.25)
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    done = subprocess.run(
        [str(COCKPIT), "init", "--service", "front", "--namespace", namespace, "--from-cluster"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "    port: 8081\n" in (tmp_path / "cockpit.yaml").read_text()
