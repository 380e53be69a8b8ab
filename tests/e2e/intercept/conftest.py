"""Intercepts on the real cluster: the shop deployed, an in-cluster prober pod calling services
by name, the local process (app.py on 127.0.0.1), and sessions on the real adapters."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cockpit.adapters.agent import AgentCluster, ApiJson
from cockpit.adapters.portforward import ApiServer, PortForwardListener
from cockpit.core.agent_spec import AgentSettings
from cockpit.core.events import ForwardChanged
from cockpit.core.intercept import AGENT_NAME, AGENT_POD_LABELS, MANAGED_BY_LABEL
from cockpit.engine.intercept import InterceptSession, kube_intercept
from tests.adapters.test_portforward_forwards import Forwards
from tests.agent.conftest import App, start_app
from tests.conftest import REPO, Cluster

HERE = Path(__file__).resolve().parent
PROBER_IMAGE = "docker.io/cockpit/python:dev"
# Fast clocks so crash-safety tests take seconds, not minutes.
FAST = AgentSettings(grace=3.0, idle_ttl=600.0, keepalive=1.0, keepalive_count=3, drain=2.0)


def restricted_container(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


class Prober:
    """The in-cluster client, driven through a port-forward."""

    def __init__(self, listener: PortForwardListener) -> None:
        self.listener = listener
        host, port = listener.address
        self.base = f"http://{host}:{port}"

    async def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        import urllib.request

        def do() -> Any:
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(
                self.base + path, data=data, method="POST" if body is not None else "GET"
            )
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read())

        return await asyncio.to_thread(do)

    async def probe(
        self, url: str = "http://api:8080/echo", n: int = 1, headers: dict[str, str] | None = None,
        keepalive: bool = False,
    ) -> list[list[Any]]:  # fmt: skip
        return list(await self.call("/probe", {"url": url, "n": n, "headers": headers or {},
                                               "keepalive": keepalive}))  # fmt: skip

    async def who(
        self, url: str = "http://api:8080/echo", headers: dict[str, str] | None = None
    ) -> str:
        """``local/<pod>`` or ``cluster``; ``error: ...`` when the request failed."""
        [(_, status, served_by, pod, _, err)] = await self.probe(url, 1, headers)
        if status != 200:
            return f"error: {status} {err}"
        return f"{served_by}/{pod}" if served_by == "local" else str(served_by)

    async def until(self, expected: str, headers: dict[str, str] | None = None,
                    within: float = 5.0, interval: float = 0.05) -> float:  # fmt: skip
        """Seconds until ``who()`` answers ``expected`` (kube-proxy's sync lag after a
        Service change); AssertionError after ``within``."""
        t0 = time.monotonic()
        seen = ""
        while time.monotonic() - t0 < within:
            seen = await self.who(headers=headers)
            if seen == expected:
                return time.monotonic() - t0
            await asyncio.sleep(interval)
        raise AssertionError(f"still {seen!r}, not {expected!r}, after {within} s")

    async def start_load(self, url: str, rate: float, seconds: float,
                         headers: dict[str, str] | None = None) -> str:  # fmt: skip
        answer = await self.call("/load", {"url": url, "rate": rate, "seconds": seconds,
                                           "headers": headers or {}})  # fmt: skip
        return str(answer["id"])

    async def load_results(self, lid: str, within: float = 120) -> list[list[Any]]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            answer = await self.call(f"/load/{lid}")
            if answer.get("done"):
                return list(answer["results"])
            await asyncio.sleep(0.5)
        raise AssertionError("load did not finish")

    async def mark(self) -> float:
        return float((await self.call("/mark", {}))["t"])


@pytest.fixture
def api_server(cluster: Cluster) -> ApiServer:
    return ApiServer.from_kubeconfig(str(cluster.kubeconfig))


@pytest.fixture
async def prober(cluster: Cluster, shop: str, api_server: ApiServer) -> AsyncIterator[Prober]:
    from tests.e2e.intercept.intercept_env import start_prober

    prober = await start_prober(cluster.api(), api_server, shop)
    yield prober
    await prober.listener.close()


@pytest.fixture
def ops(cluster: Cluster, shop: str) -> AgentCluster:
    return AgentCluster(ApiJson.from_kubeconfig(str(cluster.kubeconfig)), shop, FAST)


@pytest.fixture
def apps() -> Iterator[Callable[..., App]]:
    started: list[App] = []

    def start(**env: str) -> App:
        app = start_app(**env)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


class Sessions:
    """Builds InterceptSessions on the real adapters in this process; stops them at the end."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.started: list[InterceptSession] = []

    async def build(
        self, session_id: str, local_port: int = 0, service: str = "api",
        settings: AgentSettings = FAST, **options: Any,
    ) -> InterceptSession:  # fmt: skip
        session = await asyncio.to_thread(
            lambda: kube_intercept(kubeconfig=str(self.cluster.kubeconfig), context=None,
                                   namespace=self.namespace, service=service,
                                   session_id=session_id, local_port=local_port,
                                   settings=settings, **options)
        )  # fmt: skip
        self.started.append(session)
        return session

    async def __call__(self, session_id: str, local_port: int, mode: str | None = None,
                       **options: Any) -> InterceptSession:  # fmt: skip
        session = await self.build(session_id, local_port, **options)
        await session.start(mode)  # type: ignore[arg-type]
        return session


SessionFactory = Sessions


@pytest.fixture
async def sessions(cluster: Cluster, shop: str) -> AsyncIterator[Sessions]:
    made = Sessions(cluster, shop)
    yield made
    for session in made.started:
        await session.stop()


class Outbound(Forwards):
    """The forwards of a session's outbound calls (as ``cockpit up`` runs them): a 127.0.0.x
    listener per service, through ``session``'s tunnel while it is up, else port-forwards."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        super().__init__(cluster, namespace, report_every=0.1)

    async def start(self, *services: str, session: InterceptSession | None = None) -> None:
        await self.forwards.start(list(services))
        if session is not None:
            self.forwards.use_tunnel(lambda: session.link)

    def url(self, service: str, port: int = 8080) -> str:
        fwd = self.forwards.get(f"{service}:{port}")
        assert fwd is not None
        return f"http://{fwd.local}"

    def last(self, name: str) -> ForwardChanged:
        return self.changes(name)[-1]


@pytest.fixture
async def outbound(cluster: Cluster, shop: str) -> AsyncIterator[Outbound]:
    made = Outbound(cluster, shop)
    yield made
    await made.forwards.stop()
    made.forwards.forwarder.close()


def cockpit_objects(cluster: Cluster, namespace: str) -> list[str]:
    """Every object cockpit made in ``namespace`` that is still there."""
    api = cluster.api()
    core, apps, rbac = (
        client.CoreV1Api(api),
        client.AppsV1Api(api),
        client.RbacAuthorizationV1Api(api),
    )
    selector = f"{MANAGED_BY_LABEL}=cockpit"
    found = []
    for kind, lister in (
        ("service", core.list_namespaced_service),
        ("configmap", core.list_namespaced_config_map),
        ("serviceaccount", core.list_namespaced_service_account),
        ("deployment", apps.list_namespaced_deployment),
        ("role", rbac.list_namespaced_role),
        ("rolebinding", rbac.list_namespaced_role_binding),
        ("pod", core.list_namespaced_pod),
    ):
        found += [
            f"{kind}/{o.metadata.name}" for o in lister(namespace, label_selector=selector).items
        ]
    for kind, getter in (("deployment", apps.read_namespaced_deployment),):
        try:
            getter(AGENT_NAME, namespace)
            found.append(f"{kind}/{AGENT_NAME}")
        except client.ApiException:
            pass
    return sorted(set(found))


def service_specs(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """name -> (selector, ports, annotations) of every Service, to compare before and after."""
    out = {}
    for s in client.CoreV1Api(cluster.api()).list_namespaced_service(namespace).items:
        d = cluster.api().sanitize_for_serialization(s)
        out[s.metadata.name] = {
            "spec": {k: v for k, v in d["spec"].items()},
            "annotations": d["metadata"].get("annotations") or {},
            "labels": d["metadata"].get("labels") or {},
        }
    return out


async def until_restored(cluster: Cluster, namespace: str, before: dict[str, Any],
                         within: float = 15.0) -> None:  # fmt: skip
    """Until every Service is as in ``before`` and no shadow is left (the agent deletes a
    shadow after its drain period)."""
    deadline = time.monotonic() + within
    now = service_specs(cluster, namespace)
    while now != before:
        if time.monotonic() > deadline:
            assert now == before
        await asyncio.sleep(0.2)
        now = service_specs(cluster, namespace)


async def until_gone(cluster: Cluster, namespace: str, within: float = 60.0) -> None:
    """Until no cockpit object is left (the agent deletes itself, its pod drains, the garbage
    collector removes what the Deployment owned: slow on a busy machine)."""
    for _ in range(int(within / 0.3)):
        if not cockpit_objects(cluster, namespace):
            break
        await asyncio.sleep(0.3)
    assert cockpit_objects(cluster, namespace) == [], agent_diagnostics(cluster, namespace)


def agent_diagnostics(cluster: Cluster, namespace: str) -> str:
    """The agent pods' state and last log lines, for a failure message."""
    core = client.CoreV1Api(cluster.api())
    selector = ",".join(f"{k}={v}" for k, v in AGENT_POD_LABELS.items())
    out = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        out.append(
            f"{pod.metadata.name} {pod.status.phase} deleting={pod.metadata.deletion_timestamp}"
        )
        try:
            out.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=20))
        except client.ApiException as exc:
            out.append(f"(no log: {exc.reason})")
    return "\n".join(out)


class SessionProcess:
    """An intercept session in its own process (so a test can kill -9 or SIGSTOP it)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, kubeconfig: Path, namespace: str, session_id: str, local_port: int,
              mode: str, settings: AgentSettings = FAST) -> SessionProcess:  # fmt: skip
        env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "session_main.py"), str(kubeconfig), namespace,
             session_id, str(local_port), mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=env,
        )  # fmt: skip
        self = cls(proc)
        line = self.read()
        assert line.get("ready"), line
        return self

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"session process ended (exit {self.proc.poll()})")
        data: dict[str, Any] = json.loads(line)
        return data

    def send(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with_cont = self.proc.pid
            os.kill(with_cont, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def up_headless(
    cluster: Cluster, namespace: str, workdir: Path, *, api_hooks: str = ""
) -> subprocess.Popen[str]:
    """``cockpit up api --headless --intercept global`` in ``workdir``, on the shop demo's
    cockpit.yaml pointed at ``namespace`` (``api_hooks``: YAML lines added under api's
    ``hooks:``), with fast agent clocks; JSON lines on its stdout, commands on its stdin."""
    shutil.copy(REPO / "examples/shop/app.py", workdir / "app.py")
    config = (REPO / "examples/shop/cockpit.yaml").read_text()
    config = config.replace("namespace: shop", f"namespace: {namespace}", 1)
    config = config.replace("command: python app.py", f"command: {sys.executable} app.py")
    config = config.replace("    hooks:\n", "    hooks:\n" + api_hooks, 1)
    (workdir / "cockpit.yaml").write_text(config)
    env = {**os.environ, **FAST.env(), "KUBECONFIG": str(cluster.kubeconfig)}
    cockpit = str(Path(sys.executable).parent / "cockpit")
    return await asyncio.to_thread(
        subprocess.Popen,
        [cockpit, "up", "api", "--headless", "--intercept", "global"],
        cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
