"""The Kubernetes adapter: kubeconfig loading, error mapping, the thread -> loop handoff, and
streams against the real cluster (raw lists, log follow, prompt stop of blocked reads)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
import urllib3
from kubernetes import client

from cockpit.adapters.kube import (
    Handoff,
    Kube,
    NamespaceWatch,
    ResourceGone,
    api_error,
    exit_status,
    pick_container,
    short_reason,
)
from cockpit.errors import (
    AccessDeniedError,
    ClusterError,
    ConfigError,
    NotFoundError,
)
from tests.conftest import Cluster

# -- loading a kubeconfig --------------------------------------------------------------------

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "dev",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [
        {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "shop"}},
        {"name": "plain", "context": {"cluster": "c", "user": "u"}},
    ],
}


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(json.dumps(KUBECONFIG))
    return path


def test_load_takes_the_namespace_and_user_of_the_context(kubeconfig: Path) -> None:
    kube = Kube.load(kubeconfig)
    assert (kube.context, kube.namespace, kube.user) == ("dev", "shop", "u")
    assert kube.server == "https://127.0.0.1:1"
    other = Kube.load(kubeconfig, "plain", namespace="web")
    assert (other.context, other.namespace) == ("plain", "web")
    assert Kube.load(kubeconfig, "plain").namespace == "default"


def test_unknown_context_names_the_known_ones(kubeconfig: Path) -> None:
    with pytest.raises(NotFoundError) as missing:
        Kube.load(kubeconfig, "prod")
    assert missing.value.one_line() == (
        f"context 'prod' not found in kubeconfig {kubeconfig} (contexts: dev, plain)"
    )


def test_missing_or_broken_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Kube.load(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.write_text("contexts: [")
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        Kube.load(broken)


def test_identity_of_a_service_account_token(kubeconfig: Path) -> None:
    import base64

    claims = base64.urlsafe_b64encode(json.dumps({"sub": "system:serviceaccount:a:b"}).encode())
    kube = Kube.load(kubeconfig)
    kube.configuration.api_key["BearerToken"] = f"Bearer x.{claims.decode().rstrip('=')}.y"
    assert kube.identity == "system:serviceaccount:a:b"
    kube.configuration.api_key["BearerToken"] = "Bearer opaque"
    assert kube.identity == ""


# -- errors ----------------------------------------------------------------------------------


def status(message: str) -> bytes:
    return json.dumps({"kind": "Status", "message": message}).encode()


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        (401, AccessDeniedError, "the API server rejected the credentials (list pods)"),
        (403, AccessDeniedError, 'pods is forbidden: User "x" cannot list resource "pods"'),
        (404, NotFoundError, 'list pods: pods "p" not found'),
        (410, ResourceGone, "list pods: too old resource version"),
        (500, ClusterError, "list pods: etcd is down"),
    ],
)
def test_api_errors_map_to_ours(code: int, kind: type, text: str) -> None:
    messages = {
        401: "Unauthorized",
        403: 'pods is forbidden: User "x" cannot list resource "pods"',
        404: 'pods "p" not found',
        410: "too old resource version",
        500: "etcd is down",
    }
    error = api_error(code, status(messages[code]), "list pods")
    assert type(error) is kind
    assert error.message == text


def test_api_error_without_a_status_body() -> None:
    assert api_error(502, b"<html>bad\ngateway</html>", "get x").message == (
        "get x: <html>bad gateway</html>"
    )
    assert api_error(503, b"", "get x").message == "get x: HTTP 503"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (
            urllib3.exceptions.MaxRetryError(
                None,  # type: ignore[arg-type]
                "/",
                urllib3.exceptions.NewConnectionError(
                    None,  # type: ignore[arg-type]
                    "Failed to establish a new connection: [Errno 111] Connection refused",
                ),
            ),
            "connection refused",
        ),
        (TimeoutError(), "timed out"),
        (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), "timed out"),  # type: ignore[arg-type]
        (urllib3.exceptions.ProtocolError("Connection broken"), "connection closed"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection reset"),
    ],
)
def test_short_reasons(exc: BaseException, reason: str) -> None:
    assert short_reason(exc) == reason


def test_exit_status_from_the_error_channel() -> None:
    assert exit_status(b"") == (0, "")
    assert exit_status(json.dumps({"status": "Success"})) == (0, "")
    failure = {
        "status": "Failure",
        "message": "command terminated with non-zero exit code",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
    }
    assert exit_status(json.dumps(failure)) == (42, "")
    missing = {"status": "Failure", "message": 'exec: "nope": executable file not found in $PATH'}
    assert exit_status(json.dumps(missing))[0] == 127


def test_pick_container() -> None:
    pod = {
        "metadata": {"name": "p", "annotations": {}},
        "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]},
    }
    assert pick_container(pod, None) == "app"
    assert pick_container(pod, "sidecar") == "sidecar"
    pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] = "sidecar"
    assert pick_container(pod, None) == "sidecar"
    with pytest.raises(NotFoundError) as missing:
        pick_container(pod, "db")
    assert missing.value.one_line() == (
        "container 'db' not found in pod 'p' (containers: app, sidecar)"
    )


# -- the handoff -----------------------------------------------------------------------------


async def test_handoff_batches_and_applies_backpressure() -> None:
    handoff: Handoff[int] = Handoff(asyncio.get_running_loop(), limit=10)
    produced: list[int] = []

    def produce() -> None:
        for i in range(100):
            assert handoff.put(i)
            produced.append(i)
        handoff.end()

    thread = threading.Thread(target=produce)
    thread.start()
    await asyncio.sleep(0.2)
    assert len(produced) == 10  # blocked until the loop takes some
    got: list[int] = []
    while batch := await handoff.get():
        assert len(batch) <= 10
        got.extend(batch)
    thread.join()
    assert got == list(range(100))


async def test_handoff_passes_the_workers_error_after_its_items() -> None:
    handoff: Handoff[str] = Handoff(asyncio.get_running_loop())
    threading.Thread(target=lambda: (handoff.put("a"), handoff.end(ClusterError("broke")))).start()
    assert await handoff.get() == ["a"]
    with pytest.raises(ClusterError, match="broke"):
        await handoff.get()


async def test_a_closed_handoff_releases_a_blocked_worker() -> None:
    handoff: Handoff[int] = Handoff(asyncio.get_running_loop(), limit=1)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.extend([handoff.put(1), handoff.put(2)]))
    thread.start()
    await asyncio.sleep(0.1)
    handoff.close()
    await asyncio.to_thread(thread.join, 2)
    assert results == [True, False]


# -- against the cluster ---------------------------------------------------------------------


@pytest.fixture
def kube(cluster: Cluster) -> Kube:
    return Kube.load(cluster.kubeconfig)


@pytest.mark.cluster
def test_lists_are_plain_json(kube: Kube, shared_shop: str) -> None:
    items, version = kube.list_objects("services", shared_shop)
    assert sorted(i["metadata"]["name"] for i in items) == ["api", "store", "web"]
    assert version.isdigit()
    store = kube.get_object("services", shared_shop, "store")
    assert store["spec"]["selector"] == {"app": "store"}
    with pytest.raises(NotFoundError) as missing:
        kube.get_object("services", shared_shop, "stroe")
    assert missing.value.message == f"service 'stroe' not found in namespace '{shared_shop}'"
    assert kube.server_version().startswith("v1.20")
    assert kube.namespace_exists(shared_shop) is True
    assert kube.namespace_exists("no-such-namespace") is False


@pytest.mark.cluster
async def test_a_log_stream_stops_at_once_while_blocked(kube: Kube, shared_shop: str) -> None:
    pods, _ = kube.list_objects("pods", shared_shop)
    pod = next(p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith("web-"))
    stream = await kube.follow_log(shared_shop, pod, "web", tail_lines=3)
    chunks: list[bytes] = []
    async for batch in stream:
        chunks.extend(batch)
        if b"".join(chunks).count(b"\n") >= 3:
            break
    assert b"".join(chunks).split(b" ", 1)[0].startswith(b"20")  # RFC 3339 timestamps
    reader = next(t for t in threading.enumerate() if t.name == f"log {pod}/web")
    started = time.monotonic()
    await stream.aclose()
    await asyncio.to_thread(reader.join, 5)
    assert not reader.is_alive() and time.monotonic() - started < 2


@pytest.mark.cluster
async def test_a_namespace_watch_stops_promptly(kube: Kube, shared_shop: str) -> None:
    watch = NamespaceWatch(
        kube, shared_shop, ["services", "pods"], lambda u: None, lambda k, s: None
    )
    await watch.start()
    assert sorted(i["metadata"]["name"] for i in watch.initial["services"]) == [
        "api",
        "store",
        "web",
    ]
    names = {f"watch services {shared_shop}", f"watch pods {shared_shop}"}
    assert names <= {t.name for t in threading.enumerate()}
    started = time.monotonic()
    await watch.stop()
    assert time.monotonic() - started < 2
    assert not names & {t.name for t in threading.enumerate()}


@pytest.mark.cluster
async def test_watch_delivers_changes_in_order(
    cluster: Cluster, kube: Kube, namespace: str
) -> None:
    from cockpit.adapters.kube import Changed

    updates: list[Changed] = []
    watch = NamespaceWatch(
        kube, namespace, ["configmaps"], lambda batch: updates.extend(batch), lambda k, s: None
    )
    await watch.start()
    core = client.CoreV1Api(cluster.api())
    try:
        for i in range(5):
            await asyncio.to_thread(
                core.create_namespaced_config_map, namespace, {"metadata": {"name": f"cm{i}"}}
            )
        await asyncio.to_thread(
            core.delete_namespaced_config_map, "cm0", namespace, _preload_content=False
        )
        for _ in range(100):
            if len(updates) >= 6:
                break
            await asyncio.sleep(0.05)
        seen = [
            (u.change, u.obj["metadata"]["name"])
            for u in updates
            if u.obj["metadata"]["name"].startswith("cm")
        ]
        assert seen == [("ADDED", f"cm{i}") for i in range(5)] + [("DELETED", "cm0")]
    finally:
        await watch.stop()
