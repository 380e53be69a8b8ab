"""Env import on the real shop: `cockpit env api` values, secrets kept out of logs, the .env
file, and the local api process really reaching the cluster's store through the forwards."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cockpit.adapters.envsource import KubeEnvSource, write_private_file
from cockpit.adapters.portforward import ApiServer, KubePortForwarder
from cockpit.adapters.servicecatalog import KubeServiceCatalog
from cockpit.engine.forwards import env_file, start_outbound
from cockpit.errors import NotFoundError
from tests.conftest import REPO, Cluster

pytestmark = pytest.mark.cluster

TOKEN = "dev-store-token-3f9a1c"  # examples/shop/k8s/shop.yaml


class Adapters:
    def __init__(self, cluster: Cluster) -> None:
        api_client = cluster.api()
        self.source = KubeEnvSource(api_client)
        self.catalog = KubeServiceCatalog(api_client)
        self.forwarder = KubePortForwarder(ApiServer.from_configuration(api_client.configuration))


@pytest.fixture(scope="module")
def adapters(cluster: Cluster) -> Adapters:
    return Adapters(cluster)


async def test_cockpit_env_api_on_the_shop(
    adapters: Adapters, shared_shop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    text, env = await env_file(adapters.source, adapters.catalog, shared_shop, "api")
    values = env.as_dict()
    # api runs locally, so store and web get forwards: 127.0.0.2 and 127.0.0.3, by name.
    assert values["STORE_URL"] == "http://127.0.0.2:8080"
    assert values["STORE_HEALTH_URL"] == "http://127.0.0.2:8080/healthz"
    assert values["GREETING"] == "Welcome to the shop"
    assert values["STORE_TOKEN"] == TOKEN
    assert values["POD_NAMESPACE"] == shared_shop
    assert values["POD_NAME"] == "api-local"
    assert values["STORE_SERVICE_HOST"] == "127.0.0.2"
    assert values["WEB_SERVICE_HOST"] == "127.0.0.3"
    assert values["STORE_SERVICE_PORT"] == "8080"
    assert "API_SERVICE_HOST" not in values  # the local service itself is not forwarded
    assert "STORE_URL='http://127.0.0.2:8080'\n" in text
    assert f"STORE_TOKEN='{TOKEN}'\n" in text
    # Logged: names and sources; never the secret's value.
    assert "STORE_TOKEN" in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(env)


async def test_unknown_service_is_one_line(adapters: Adapters, shared_shop: str) -> None:
    with pytest.raises(NotFoundError) as info:
        await env_file(adapters.source, adapters.catalog, shared_shop, "apii")
    line = info.value.one_line()
    assert "apii" in line and shared_shop in line and "\n" not in line


async def test_missing_config_map_is_one_line(
    adapters: Adapters, cluster: Cluster, namespace: str
) -> None:
    apps = client.AppsV1Api(cluster.api())
    core = client.CoreV1Api(cluster.api())
    labels = {"app": "lonely"}
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="lonely"),
            spec=client.V1ServiceSpec(selector=labels, ports=[client.V1ServicePort(port=80)]),
        ),
    )
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="lonely-app"),  # found through the selector
            spec=client.V1DeploymentSpec(
                replicas=0,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(
                                name="main",
                                image="cockpit/pause:dev",
                                env=[
                                    client.V1EnvVar(
                                        name="CFG",
                                        value_from=client.V1EnvVarSource(
                                            config_map_key_ref=client.V1ConfigMapKeySelector(
                                                name="not-there", key="K"
                                            )
                                        ),
                                    )
                                ],
                            )
                        ]
                    ),
                ),
            ),
        ),
    )
    with pytest.raises(NotFoundError) as info:
        await env_file(adapters.source, adapters.catalog, namespace, "lonely")
    line = info.value.one_line()
    assert "configMap 'not-there'" in line and "lonely-app" in line


def test_env_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "api.env"
    target.write_text("old")
    target.chmod(0o644)
    old = os.umask(0)
    try:
        write_private_file(target, f"STORE_TOKEN='{TOKEN}'\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == f"STORE_TOKEN='{TOKEN}'\n"
    assert [p.name for p in tmp_path.iterdir()] == ["api.env"]  # no temp file left


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_local_api_with_the_imported_env_reaches_the_cluster_store(
    cluster: Cluster, adapters: Adapters, shared_shop: str, tmp_path: Path
) -> None:
    outbound = await start_outbound(
        adapters.forwarder,
        adapters.catalog,
        adapters.source,
        shared_shop,
        "api",
        lambda e: None,
    )
    proc: subprocess.Popen[bytes] | None = None
    try:
        # What `cockpit env api` writes while the session runs: the same addresses.
        text, _ = await env_file(adapters.source, adapters.catalog, shared_shop, "api")
        env_path = write_private_file(tmp_path / ".env", text)
        import dotenv

        imported: dict[str, Any] = dotenv.dotenv_values(env_path, interpolate=False)
        assert imported == outbound.env.as_dict()
        port = _free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            **imported,
            "PORT": str(port),
            "BIND": "127.0.0.1",
            "COCKPIT_LOCAL": "1",
            "LOG_INTERVAL": "60",
        }
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [sys.executable, str(REPO / "examples" / "shop" / "app.py")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        answer = await _get_json("127.0.0.1", port, "/", within=15)
        chain = answer["chain"]
        assert [(hop["service"], hop["served_by"]) for hop in chain] == [
            ("api", "local"),
            ("store", "cluster"),
        ]
        assert answer["greeting"] == "Welcome to the shop"
        assert answer["store_health"] == "ok"  # STORE_HEALTH_URL (the FQDN) was rewritten
        assert answer["upstream"]["token"] == "valid"  # STORE_TOKEN came from the Secret
        store_pods = {
            p.metadata.name
            for p in client.CoreV1Api(cluster.api())
            .list_namespaced_pod(shared_shop, label_selector="app=store")
            .items
        }
        assert chain[1]["pod"] in store_pods
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        await outbound.forwards.stop()
        adapters.forwarder.close()


async def _get_json(host: str, port: int, path: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        writer.write(f"GET {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), data[:300]
        result: dict[str, Any] = json.loads(body)
        return result


def _cockpit(cluster: Cluster, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from cockpit.cli import main; sys.exit(main())", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cockpit_env_command_writes_a_private_env_file(
    cluster: Cluster, shared_shop: str, tmp_path: Path
) -> None:
    (tmp_path / "cockpit.yaml").write_text(
        f"namespace: {shared_shop}\nservices:\n  api:\n    command: python app.py\n"
    )
    out = _cockpit(cluster, tmp_path, "env", "api", "-o", "api.env")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "api.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "STORE_URL='http://127.0.0.2:8080'\n" in text
    assert f"STORE_TOKEN='{TOKEN}'\n" in text
    assert TOKEN not in out.stderr and "1 from Secrets" in out.stderr

    bad = _cockpit(cluster, tmp_path, "env", "stroe")
    assert bad.returncode == NotFoundError.exit_code
    assert bad.stderr.strip().splitlines() == [
        f"cockpit: error: service 'stroe' in namespace '{shared_shop}' not found"
    ]
