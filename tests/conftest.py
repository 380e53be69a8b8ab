"""Shared fixtures: the real cluster (dev-cluster by default, COCKPIT_TEST_KUBECONFIG to override),
a namespace per test, and isolation from the user's own cockpit config."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEV_CLUSTER = REPO / "scripts" / "dev-cluster"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The egress-guard check reads counters left by everything else: it must run last.
    last = [i for i in items if "egress_guard" in i.nodeid]
    rest = [i for i in items if "egress_guard" not in i.nodeid]
    items[:] = rest + last
    for item in items:
        if item.get_closest_marker("cluster") or item.get_closest_marker("tmux"):
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=2))


@pytest.fixture(autouse=True)
def _isolate_user_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests never read or write the developer's own cockpit settings or themes."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))


class Cluster:
    """The cluster under test: a kubeconfig path plus whether this run started it."""

    def __init__(self, kubeconfig: Path, started_here: bool, dev: bool) -> None:
        self.kubeconfig = kubeconfig
        self.started_here = started_here
        self.dev = dev  # True when it is our own dev-cluster (egress guard, kubectl in cache)

    def api(self):  # type: ignore[no-untyped-def]
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    override = os.environ.get("COCKPIT_TEST_KUBECONFIG")
    if override:
        yield Cluster(Path(override), started_here=False, dev=False)
        return
    was_up = (
        subprocess.run([sys.executable, str(DEV_CLUSTER), "status"], capture_output=True).returncode
        == 0
    )
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(DEV_CLUSTER), "up"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(
            f"dev-cluster up failed: {proc.stderr.strip().splitlines()[-1:]}", pytrace=False
        )
    kubeconfig = Path(proc.stdout.strip().splitlines()[-1])
    print(f"\ndev cluster ready in {time.monotonic() - t0:.1f} s ({kubeconfig})", file=sys.stderr)
    yield Cluster(kubeconfig, started_here=not was_up, dev=True)
    if not was_up and os.environ.get("COCKPIT_KEEP_CLUSTER") != "1":
        subprocess.run([sys.executable, str(DEV_CLUSTER), "down"], capture_output=True)


@contextlib.contextmanager
def make_namespace(cluster: Cluster, hint: str) -> Iterator[str]:
    """A fresh namespace (ready for pods), deleted afterwards without waiting for it to go."""
    from kubernetes import client

    api = client.CoreV1Api(cluster.api())
    base = "".join(c if c.isalnum() else "-" for c in hint.lower())[:40].strip("-")
    name = f"t-{base}-{secrets.token_hex(3)}"
    api.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"cockpit-test": "1"}))
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # pods need the namespace's default ServiceAccount
        if api.list_namespaced_service_account(name).items:
            break
        time.sleep(0.2)
    try:
        yield name
    finally:
        api.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test."""
    with make_namespace(cluster, request.node.name) as name:
        yield name


SHOP_MANIFEST = REPO / "examples" / "shop" / "k8s" / "shop.yaml"


def deploy_shop(cluster: Cluster, namespace: str, timeout: float = 90.0) -> None:
    """Apply the shop demo into ``namespace`` and wait until every Deployment is available."""
    import yaml
    from kubernetes import client, utils

    api = cluster.api()
    docs = [d for d in yaml.safe_load_all(SHOP_MANIFEST.read_text()) if d]
    utils.create_from_yaml(api, yaml_objects=docs, namespace=namespace)
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deps = apps.list_namespaced_deployment(namespace).items
        if deps and all((d.status.available_replicas or 0) == d.spec.replicas for d in deps):
            return
        time.sleep(0.3)
    raise AssertionError(f"shop not available in {namespace} after {timeout:.0f} s")


def write_shop_config(directory: Path, namespace: str, **env: str) -> int:
    """A cockpit.yaml in ``directory`` that runs the shop's api here (on a free loopback
    port, returned) against the shop in ``namespace``; ``env`` adds to the api's env."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    variables = {"SERVICE": "api", "PORT": str(port), "BIND": "127.0.0.1", **env}
    (directory / "cockpit.yaml").write_text(
        f"namespace: {namespace}\n"
        "services:\n"
        "  api:\n"
        f"    command: [{sys.executable!r}, {str(REPO / 'examples/shop/app.py')!r}]\n"
        f"    port: {port}\n"
        f"    env: {{{', '.join(f'{k}: {v!r}' for k, v in variables.items())}}}\n"
    )
    return port


@pytest.fixture
def shop(cluster: Cluster, namespace: str) -> str:
    """The shop demo (web -> api -> store) deployed and available in a fresh namespace."""
    deploy_shop(cluster, namespace)
    return namespace


@pytest.fixture(scope="module")
def shared_shop(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """One shop for a whole test module, for tests that only read from it."""
    with make_namespace(cluster, request.module.__name__.rsplit(".", 1)[-1]) as name:
        deploy_shop(cluster, name)
        yield name
